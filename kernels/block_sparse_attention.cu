// The Hopper block-sparse flash-attention forward kernel (sm_90a), built from CuTe's TMA and
// wgmma atoms. The sparsity lives only in the producer's address list (the CSR's key blocks) and
// the consumers' trip count; there are no per-element masks except on the partial last key chunk
// and on the unused half of an odd-length row of 64-token blocks.
//
// One CTA per query block (a CSR row), launched longest row first: the hardware hands out CTAs in
// index order, so the short rows fill the tail of the grid. (Persistent grids, with a static row
// stride and with an atomic row queue, measured slower on the H100: docs/kernel.md.)
// CTA = 3 warpgroups. Warpgroup 0 (producer, one thread) issues TMA loads: the 128-row Q tile
// once, then per stage a 128-row K tile and V tile, each made of two 64-row chunks (one CSR block
// of 128, or two blocks of 64). Warpgroups 1 and 2 each own 64 query rows: S = Q·Kᵀ (SS wgmma),
// online softmax in registers, O += P·V (RS wgmma, P straight from the S registers). The QK GEMM
// of stage i overlaps the PV GEMM of stage i-1, and a named-barrier ping-pong lets one
// warpgroup's softmax run while the other's GEMMs occupy the tensor cores.
//
// With SLA's linear branch fused (kLinear, head dim 128): the producer also loads the query
// block's complement sum H_c (D x D) and the projection W, once each, into buffers of their own
// beside the pipeline. Each consumer, while its first K and V tiles load, computes φ(Q) = softmax over D
// of its 64 rows in the S accumulator's register layout and keeps it there; after its softmax
// stages φ(Q)·H_c is one more RS wgmma with H_c read like a V tile (D rows as its 128 keys), and
// (φ(Q)H_c)·Wᵀ one more with W read like a K tile; it adds that over φ(Q)·Z_c to O / l before the
// single write. The rest of the branch (summaries, complement map and GEMM) runs before this
// kernel: complement_linear_attention.cpp.
#include "kernels/block_sparse_attention_cuda.h"

#include <cub/block/block_scan.cuh>
#include <cute/tensor.hpp>
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm90.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_conversion.h>
#include <cutlass/numeric_types.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include <array>
#include <atomic>
#include <cmath>

namespace ditkit::cuda {

namespace {

using namespace cute;

constexpr int kChunk = 64;              // TMA unit: 64 key (or query) rows
constexpr int kTileN = 128;             // key rows per stage: two chunks
constexpr int kThreads = 384;           // producer + two consumer warpgroups
constexpr int kConsumerThreads = 256;
// setmaxnreg only hands the consumers what the producer gives back: the CTA launches with 168
// registers a thread (65,536 / 384, rounded down to 8), and 32 + 2 x 240 deadlocked on the H100.
constexpr int kProducerRegisters = 24, kConsumerRegisters = 240;
static_assert(kProducerRegisters * 128 + kConsumerRegisters * kConsumerThreads <= 168 * kThreads);

template <class Element, int kHeadDim, bool kLinear>
struct KernelConfig {
  static_assert(!kLinear || kHeadDim == kTileN, "H_c is read as one V tile: D rows");
  static constexpr int kStages = kHeadDim == 64 ? 4 : 2;
  using HeadDim = Int<kHeadDim>;
  using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;
  // Q: one 64-row slab per consumer warpgroup.
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kChunk>, HeadDim, _2>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kTileN>, HeadDim, Int<kStages>>{}));
  // Rows [0, 64) of one stage: what one chunk's TMA load fills (the other half is an offset).
  using SmemLayoutChunk = decltype(composition(SmemLayoutK{}, Layout<Shape<Int<kChunk>, HeadDim>, Stride<_1, Int<kTileN>>>{}));
  // V read as the PV GEMM's B operand (N = head dim, K = key rows): the same bytes, MN-major.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutK{}, make_ordered_layout(Shape<HeadDim, Int<kTileN>, Int<kStages>>{}, Step<_2, _1, _3>{})));

  using TiledMmaQK = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<Int<kChunk>, Int<kTileN>, HeadDim>>()));
  using TiledMmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<Int<kChunk>, HeadDim, Int<kTileN>>, GMMA::Major::K,
                           GMMA::Major::MN>()));
  // kLinear: (φ(Q)H_c)·Wᵀ, A from registers, W in its own tile laid out as one K stage.
  using TiledMmaW = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<Int<kChunk>, Int<kTileN>, HeadDim>>()));

  // Global tensors (tokens, head dim, heads, batch) with D contiguous.
  using GmemShape = Shape<int32_t, HeadDim, int32_t, int32_t>;
  using GmemStride = Stride<int64_t, _1, int64_t, int64_t>;
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), GmemShape{},
                                          GmemStride{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{}(_, _, _0{})));
  using TmaKV = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutChunk{}));
  // O leaves through each warpgroup's Q slab, one 64-row TMA store.
  using TmaO = decltype(make_tma_copy(SM90_TMA_STORE{}, GmemTensor{}, SmemLayoutQ{}(_, _, _0{})));

  using Pipeline = cutlass::PipelineTmaAsync<kStages>;

  struct SharedStorage {
    cute::array_aligned<Element, cosize_v<SmemLayoutQ>, 1024> q;
    cute::array_aligned<Element, cosize_v<SmemLayoutK>, 1024> k;
    cute::array_aligned<Element, cosize_v<SmemLayoutK>, 1024> v;
    // H_c and W, each in one K stage's layout (a few bytes when unused). W has a buffer of its own
    // (it fits, with ~1 KB of the 227 to spare): loaded into the K stage after the last tile, it
    // waited for that stage to drain, and the W GEMM for the load (~2% of the warps' samples).
    cute::array_aligned<Element, kLinear ? kTileN * kHeadDim : 8, 1024> hc;
    cute::array_aligned<Element, kLinear ? kTileN * kHeadDim : 8, 1024> w;
    typename Pipeline::SharedStorage pipe_k, pipe_v;
    uint64_t q_full, hc_full;
  };

  struct Params {
    TmaQ tma_q;
    TmaKV tma_k, tma_v;
    TmaKV tma_hc;                   // kLinear: the complement sums as (D, D, B·H·NQ, 1) tensors
    TmaKV tma_w;                    // kLinear: W [D, D] as a (D, D, 1, 1) tensor
    const Element* complement_sums;  // kLinear: [B, H, NQ, D + 1, D]; row D is Z_c
    TmaO tma_o;
    float* lse;
    const int32_t* row_offsets;  // null: every row takes every key chunk
    const int32_t* col_indices;
    const int32_t* row_order;    // null: index order
    int32_t tokens, heads, batch, num_q_blocks;
    int32_t chunks_per_block;  // 1 for 64-token CSR blocks, 2 for 128
    float scale_log2;
  };
};

// Named barriers 1 and 2 order the two consumer warpgroups' GEMM issue (0 is __syncthreads).
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "n"(kConsumerThreads));
}
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "n"(kConsumerThreads));
}
// Named barriers 3 and 4: one consumer warpgroup's own threads (its epilogue's smem stores).
__device__ __forceinline__ void warpgroup_sync(int wg) {
  asm volatile("bar.sync %0, 128;" ::"r"(3 + wg));
}

// The wgmma accumulator ((2, 2, N/8), M, N) seen as (rows, columns) of this thread.
template <class Layout>
__device__ constexpr auto rowcol(Layout l) {
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

// The QK accumulator's register layout re-read as the A operand of an RS wgmma with K = 16 steps
// (16-bit types: the two layouts hold the same elements in the same registers).
template <class Layout>
__device__ constexpr auto acc_as_a_operand(Layout l) {
  auto v = logical_divide(get<0>(l), Shape<_2, _2, _2>{});  // (2, 2, (2, N/16))
  return make_layout(make_layout(get<0>(v), get<1>(v), get<2, 0>(v)), get<1>(l),
                     make_layout(get<2, 1>(v), get<2>(l)));
}

// Issues one warpgroup GEMM (all K steps) and commits it; the caller waits.
template <bool kZeroInit, class TiledMma, class TA, class TB, class TC>
__device__ __forceinline__ void issue_gemm(TiledMma& mma, TA& a, TB const& b, TC& c) {
  constexpr bool kRegisterA = !is_base_of<GMMA::DescriptorIterator, typename TiledMma::FrgTypeA>::value;
  if constexpr (kRegisterA) warpgroup_fence_operand(a);
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int kb = 0; kb < size<2>(a); ++kb) {
    cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

// Per-row running max (log2 units, scaled) and this thread's share of the row sum.
template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows], row_sum[kRows], scale[kRows];

  __device__ OnlineSoftmax() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) row_max[r] = -INFINITY, row_sum[r] = 0.f, scale[r] = 1.f;
  }

  // Scores (rows, cols) -> unnormalised probabilities in place; remembers how much the rows
  // accumulated so far shrink (applied by rescale() once the previous PV GEMM is done).
  template <class T>
  __device__ void update(T& s, float scale_log2) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float m = -INFINITY;
      CUTE_UNROLL
      for (int j = 0; j < size<1>(s); ++j) m = fmaxf(m, s(r, j));
      const float new_max = fmaxf(row_max[r], quad_max(m) * scale_log2);
      scale[r] = fast_exp2(row_max[r] - new_max);
      row_max[r] = new_max;
      float sum = 0.f;
      CUTE_UNROLL
      for (int j = 0; j < size<1>(s); ++j) {
        s(r, j) = fast_exp2(fmaf(s(r, j), scale_log2, -new_max));
        sum += s(r, j);
      }
      row_sum[r] = row_sum[r] * scale[r] + sum;
    }
  }

  template <class T>
  __device__ void rescale(T& o) const {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r)
      CUTE_UNROLL
      for (int j = 0; j < size<1>(o); ++j) o(r, j) *= scale[r];
  }
};

// -inf for key columns past the sequence end and for the unused copy of an odd row's last chunk.
template <class S, class C>
__device__ void mask_columns(S& s, C const& cols, int c0, int c1, bool dup, int tokens) {
  CUTE_UNROLL
  for (int j = 0; j < size<1>(s); ++j) {
    const int col = get<1>(cols(0, j));
    const int token = (col < kChunk ? c0 : c1) * kChunk + col % kChunk;
    if (token >= tokens || (dup && col >= kChunk)) {
      CUTE_UNROLL
      for (int r = 0; r < size<0>(s); ++r) s(r, j) = -INFINITY;
    }
  }
}

// The token of a key chunk list position: CSR entries expand to 1 or 2 chunks of 64 tokens.
__device__ __forceinline__ int chunk_at(const int32_t* cols, int t, int chunks_per_block) {
  if (!cols) return t;  // every chunk, in order
  return chunks_per_block == 2 ? 2 * __ldg(cols + (t >> 1)) + (t & 1) : __ldg(cols + t);
}

// This thread's share of a warpgroup's 64 x 128 shared tile (16-bit, 128-byte swizzled) in the
// wgmma accumulator's layout, f(r, j) = tile(16·warp + lane/4 + 8r, 8·(j/2) + 2·(lane%4) + j%2):
// eight ldmatrix.x4, where reading it element by element took 64 loads and their swizzled
// addresses. Each x4 reads the 8 x 8 matrices (rows +0/+8) x (columns 8n/8n+8); ldmatrix hands
// lane t row t/4, columns 2(t%4) and +1 of each, which is exactly that layout.
template <class Element, class F, class Tile>
__device__ void load_accumulator_layout(F& f, Tile const& tile) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32 % 4, m = lane / 8;
  const int row = 16 * warp + lane % 8 + 8 * (m & 1);
  CUTE_UNROLL
  for (int n = 0; n < size<1>(f) / 2; n += 2) {
    uint32_t reg[4];
    SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const uint128_t*>(&tile(row, 8 * (n + m / 2))), reg[0], reg[1],
                            reg[2], reg[3]);
    CUTE_UNROLL
    for (int i = 0; i < 4; ++i) {
      const auto pair = reinterpret_cast<const cutlass::Array<Element, 2>&>(reg[i]);
      f(i % 2, 2 * (n + i / 2)) = float(pair[0]);
      f(i % 2, 2 * (n + i / 2) + 1) = float(pair[1]);
    }
  }
}

// φ(Q) for this warpgroup's 64 query rows in the QK accumulator's layout (f: fp32, filled by
// load_accumulator_layout; `pos` gives its columns), rounded to Element as the tensor cores will
// read it; den[r] gets row r's φ(q)·Z_c, from zc, Z_c in global memory (read in pairs of columns).
template <class Element, class F, class Pos, class SQ>
__device__ void softmax_features(F& f, Pos const& pos, SQ const& sq, const Element* zc, float* den) {
  constexpr int kCols = decltype(size<1>(f))::value;
  float z[kCols];
  CUTE_UNROLL
  for (int j = 0; j < kCols; j += 2) {
    const uint32_t bits = __ldg(reinterpret_cast<const uint32_t*>(zc + get<1>(pos(0, j))));
    const auto pair = reinterpret_cast<const cutlass::Array<Element, 2>&>(bits);
    z[j] = float(pair[0]), z[j + 1] = float(pair[1]);
  }
  load_accumulator_layout<Element>(f, sq);
  CUTE_UNROLL
  for (int r = 0; r < size<0>(f); ++r) {
    float m = -INFINITY;
    CUTE_UNROLL
    for (int j = 0; j < kCols; ++j) m = fmaxf(m, f(r, j));
    const float m_log2 = quad_max(m) * float(M_LOG2E);
    float sum = 0.f;
    CUTE_UNROLL
    for (int j = 0; j < kCols; ++j) {
      f(r, j) = fast_exp2(fmaf(f(r, j), float(M_LOG2E), -m_log2));
      sum += f(r, j);
    }
    const float inv = 1.f / quad_sum(sum);
    float dot = 0.f;
    CUTE_UNROLL
    for (int j = 0; j < kCols; ++j) {
      f(r, j) = float(Element(f(r, j) * inv));
      dot += f(r, j) * z[j];
    }
    den[r] = quad_sum(dot);
  }
}

template <class Element, int kHeadDim, bool kLinear>
__global__ void __launch_bounds__(kThreads, 1)
    block_sparse_attention_kernel(const __grid_constant__ typename KernelConfig<Element, kHeadDim, kLinear>::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = KernelConfig<Element, kHeadDim, kLinear>;
  using Pipeline = typename Cfg::Pipeline;
  using HeadDim = typename Cfg::HeadDim;
  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename Cfg::SharedStorage*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));

  const int warp_group = threadIdx.x / 128;
  const int row = p.row_order ? __ldg(p.row_order + blockIdx.x) : blockIdx.x;
  const int qb = row % p.num_q_blocks;
  const int h = (row / p.num_q_blocks) % p.heads;
  const int b = row / p.num_q_blocks / p.heads;
  const int begin = p.row_offsets ? __ldg(p.row_offsets + row) : 0;
  const int n_chunks = p.row_offsets ? (__ldg(p.row_offsets + row + 1) - begin) * p.chunks_per_block
                                     : (p.tokens + kChunk - 1) / kChunk;
  const int n_stages = (n_chunks + 1) / 2;
  const int32_t* cols = p.row_offsets ? p.col_indices + begin : nullptr;

  typename Pipeline::Params pp;
  pp.transaction_bytes = kTileN * kHeadDim * sizeof(Element);
  pp.role = warp_group == 0 ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pp.is_leader = threadIdx.x == 0;
  pp.num_consumers = kConsumerThreads;
  Pipeline pipe_k(ss.pipe_k, pp, Shape<_1, _1, _1>{});
  Pipeline pipe_v(ss.pipe_v, pp, Shape<_1, _1, _1>{});
  if (threadIdx.x == 0) {
    cutlass::arch::ClusterTransactionBarrier::init(&ss.q_full, 1);
    if constexpr (kLinear) cutlass::arch::ClusterTransactionBarrier::init(&ss.hc_full, 1);
  }
  cutlass::arch::fence_barrier_init();
  __syncthreads();

  const auto gmem_shape = make_shape(p.tokens, HeadDim{}, p.heads, p.batch);
  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegisters>();
    if (threadIdx.x != 0) return;
    Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Cfg::SmemLayoutQ{});
    Tensor gQ = local_tile(p.tma_q.get_tma_tensor(gmem_shape)(_, _, h, b), Shape<Int<kChunk>, HeadDim>{},
                           make_coord(_, _0{}));  // (64, D, query chunks)
    auto tma_q = p.tma_q.get_slice(_0{});
    Tensor tQg = tma_q.partition_S(gQ);
    cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.q_full, 2 * kChunk * kHeadDim * sizeof(Element));
    CUTE_UNROLL
    for (int w = 0; w < 2; ++w)
      copy(p.tma_q.with(ss.q_full), tQg(_, _, _, 2 * qb + w), tma_q.partition_D(sQ(_, _, w)));

    auto chunk_dst = [&](Element* base, int stage, int half) {
      // A 1024-byte aligned offset, which the 128-byte swizzle leaves unchanged.
      const int offset = typename Cfg::SmemLayoutK{}.layout_b()(half * kChunk, 0, stage);
      return make_tensor(make_smem_ptr(base + offset), typename Cfg::SmemLayoutChunk{});
    };
    if constexpr (kLinear) {
      auto tma_hc = p.tma_hc.get_slice(_0{});
      const auto hc_shape = make_shape(int32_t(kHeadDim), HeadDim{}, p.batch * p.heads * p.num_q_blocks, 1);
      Tensor tHg = tma_hc.partition_S(local_tile(p.tma_hc.get_tma_tensor(hc_shape)(_, _, row, 0),
                                                 Shape<Int<kChunk>, HeadDim>{}, make_coord(_, _0{})));
      auto tma_w = p.tma_w.get_slice(_0{});
      Tensor tWg = tma_w.partition_S(local_tile(p.tma_w.get_tma_tensor(make_shape(int32_t(kHeadDim), HeadDim{}, 1, 1))(
                                                    _, _, 0, 0),
                                                Shape<Int<kChunk>, HeadDim>{}, make_coord(_, _0{})));
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&ss.hc_full,
                                                                     2 * kTileN * kHeadDim * sizeof(Element));
      CUTE_UNROLL
      for (int w = 0; w < 2; ++w) {
        copy(p.tma_hc.with(ss.hc_full), tHg(_, _, _, w), tma_hc.partition_D(chunk_dst(ss.hc.data(), 0, w)));
        copy(p.tma_w.with(ss.hc_full), tWg(_, _, _, w), tma_w.partition_D(chunk_dst(ss.w.data(), 0, w)));
      }
    }

    auto tma_k = p.tma_k.get_slice(_0{});
    auto tma_v = p.tma_v.get_slice(_0{});
    Tensor tKg = tma_k.partition_S(local_tile(p.tma_k.get_tma_tensor(gmem_shape)(_, _, h, b),
                                              Shape<Int<kChunk>, HeadDim>{}, make_coord(_, _0{})));
    Tensor tVg = tma_v.partition_S(local_tile(p.tma_v.get_tma_tensor(gmem_shape)(_, _, h, b),
                                              Shape<Int<kChunk>, HeadDim>{}, make_coord(_, _0{})));
    auto state = cutlass::make_producer_start_state<Pipeline>();
    for (int s = 0; s < n_stages; ++s) {
      // An odd chunk count loads the last chunk twice; the consumers mask the copy.
      const int c0 = chunk_at(cols, 2 * s, p.chunks_per_block);
      const int c1 = 2 * s + 1 < n_chunks ? chunk_at(cols, 2 * s + 1, p.chunks_per_block) : c0;
      pipe_k.producer_acquire(state);
      copy(p.tma_k.with(*pipe_k.producer_get_barrier(state)), tKg(_, _, _, c0),
           tma_k.partition_D(chunk_dst(ss.k.data(), state.index(), 0)));
      copy(p.tma_k.with(*pipe_k.producer_get_barrier(state)), tKg(_, _, _, c1),
           tma_k.partition_D(chunk_dst(ss.k.data(), state.index(), 1)));
      pipe_v.producer_acquire(state);
      copy(p.tma_v.with(*pipe_v.producer_get_barrier(state)), tVg(_, _, _, c0),
           tma_v.partition_D(chunk_dst(ss.v.data(), state.index(), 0)));
      copy(p.tma_v.with(*pipe_v.producer_get_barrier(state)), tVg(_, _, _, c1),
           tma_v.partition_D(chunk_dst(ss.v.data(), state.index(), 1)));
      ++state;
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<kConsumerRegisters>();
  const int wg = warp_group - 1;
  const int tid = threadIdx.x % 128;
  typename Cfg::TiledMmaQK mma_qk;
  typename Cfg::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);
  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Cfg::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Cfg::SmemLayoutK{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v.data()), typename Cfg::SmemLayoutVt{});
  Tensor tSrQ = thr_qk.make_fragment_A(thr_qk.partition_A(sQ(_, _, wg)));
  Tensor tSrK = thr_qk.make_fragment_B(thr_qk.partition_B(sK));
  Tensor tOrV = thr_pv.make_fragment_B(thr_pv.partition_B(sVt));

  Tensor acc_o = partition_fragment_C(mma_pv, Shape<Int<kChunk>, HeadDim>{});
  Tensor o_rc = make_tensor(acc_o.data(), rowcol(acc_o.layout()));
  clear(acc_o);
  Tensor tScS = thr_qk.partition_C(make_identity_tensor(Shape<Int<kChunk>, Int<kTileN>>{}));
  Tensor cols_rc = make_tensor(tScS.data(), rowcol(tScS.layout()));
  OnlineSoftmax<decltype(size<0>(o_rc))::value> softmax;

  // Warpgroup 2 lets warpgroup 1 issue first.
  if (wg == 1) named_arrive(1);
  cutlass::arch::ClusterTransactionBarrier::wait(&ss.q_full, 0);

  cutlass::PipelineState<Cfg::kStages> read_k, read_v;
  using FragP = cutlass::Array<Element, decltype(size(partition_fragment_C(mma_qk, Shape<Int<kChunk>, Int<kTileN>>{})))::value>;
  FragP frag_p;
  auto p_layout = acc_as_a_operand(partition_fragment_C(mma_qk, Shape<Int<kChunk>, Int<kTileN>>{}).layout());
  Tensor tOrP = make_tensor(make_rmem_ptr<Element>(frag_p.data()), p_layout);
  cutlass::NumericArrayConverter<Element, float, FragP::kElements> to_element;

  using AccS = decltype(partition_fragment_C(mma_qk, Shape<Int<kChunk>, Int<kTileN>>{}));
  auto probabilities = [&](AccS& acc_s, int s) {
    Tensor s_rc = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
    const int c0 = chunk_at(cols, 2 * s, p.chunks_per_block);
    const bool dup = 2 * s + 1 >= n_chunks;
    const int c1 = dup ? c0 : chunk_at(cols, 2 * s + 1, p.chunks_per_block);
    if (dup || (c0 + 1) * kChunk > p.tokens || (c1 + 1) * kChunk > p.tokens)
      mask_columns(s_rc, cols_rc, c0, c1, dup, p.tokens);
    softmax.update(s_rc, p.scale_log2);
  };
  auto to_operand = [&](AccS const& acc_s) {
    frag_p = to_element(*reinterpret_cast<const cutlass::Array<float, FragP::kElements>*>(acc_s.data()));
  };

  // kLinear: φ(Q) and den = φ(Q)·Z_c per row now, while the first K and V tiles are in flight;
  // φ(Q) waits in registers, the A operand of φ(Q)·H_c, until the epilogue.
  constexpr int kRows = decltype(size<0>(o_rc))::value;
  float den[kRows] = {};
  FragP frag_q;
  if constexpr (kLinear) {
    const Element* zc = p.complement_sums + (int64_t(row) * (kHeadDim + 1) + kHeadDim) * kHeadDim;
    AccS acc_f;
    Tensor f_rc = make_tensor(acc_f.data(), rowcol(acc_f.layout()));
    softmax_features<Element>(f_rc, cols_rc, sQ(_, _, wg), zc, den);
    frag_q = to_element(*reinterpret_cast<const cutlass::Array<float, FragP::kElements>*>(acc_f.data()));
  }

  // The first stage alone; later ones issue QK of stage s together with PV of stage s - 1.
  if (n_stages > 0) {
    AccS acc_s;
    pipe_k.consumer_wait(read_k);
    named_sync(1 + wg);
    issue_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
    named_arrive(1 + (1 - wg));
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_s);
    pipe_k.consumer_release(read_k);
    ++read_k;
    probabilities(acc_s, 0);
    to_operand(acc_s);
  }
  CUTE_NO_UNROLL
  for (int s = 1; s < n_stages; ++s) {
    AccS acc_s;
    pipe_k.consumer_wait(read_k);
    named_sync(1 + wg);
    issue_gemm<true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
    pipe_v.consumer_wait(read_v);
    issue_gemm<false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
    named_arrive(1 + (1 - wg));
    warpgroup_wait<1>();
    warpgroup_fence_operand(acc_s);
    pipe_k.consumer_release(read_k);
    ++read_k;
    probabilities(acc_s, s);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
    warpgroup_fence_operand(tOrP);  // P's registers stay untouched until the PV GEMM is done
    pipe_v.consumer_release(read_v);
    ++read_v;
    softmax.rescale(o_rc);
    to_operand(acc_s);
  }
  // The last PV GEMM, and with the linear branch φ(Q)·H_c beside it (a separate accumulator).
  Tensor acc_l = partition_fragment_C(mma_pv, Shape<Int<kChunk>, HeadDim>{});
  Tensor l_rc = make_tensor(acc_l.data(), rowcol(acc_l.layout()));
  Tensor tOrQ = make_tensor(make_rmem_ptr<Element>(frag_q.data()), p_layout);
  if (n_stages > 0) {
    pipe_v.consumer_wait(read_v);
    issue_gemm<false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
  }
  if constexpr (kLinear) {
    Tensor sHt = make_tensor(make_smem_ptr(ss.hc.data()), typename Cfg::SmemLayoutVt{});
    Tensor tOrH = thr_pv.make_fragment_B(thr_pv.partition_B(sHt));
    cutlass::arch::ClusterTransactionBarrier::wait(&ss.hc_full, 0);
    issue_gemm<true>(mma_pv, tOrQ, tOrH(_, _, _, 0), acc_l);
  }
  warpgroup_wait<0>();
  warpgroup_fence_operand(acc_o);
  warpgroup_fence_operand(tOrP);
  if (n_stages > 0) pipe_v.consumer_release(read_v);
  if constexpr (kLinear) {
    // acc_l = (φ(Q)·H_c)·Wᵀ (den 0: an empty complement). φ(Q)H_c rounded to Element is the next
    // A operand (its layout is the S accumulator's at D = 128).
    warpgroup_fence_operand(acc_l);
    warpgroup_fence_operand(tOrQ);
    frag_p = to_element(*reinterpret_cast<const cutlass::Array<float, FragP::kElements>*>(acc_l.data()));
    typename Cfg::TiledMmaW mma_w;
    auto thr_w = mma_w.get_thread_slice(tid);
    Tensor sW = make_tensor(make_smem_ptr(ss.w.data()), typename Cfg::SmemLayoutK{});  // stage 0 only
    Tensor tSrW = thr_w.make_fragment_B(thr_w.partition_B(sW));
    issue_gemm<true>(mma_w, tOrP, tSrW(_, _, _, 0), acc_l);  // W arrived with H_c (hc_full)
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_l);
  }

  // Epilogue: O / l (+ the linear branch) in q's dtype, staged with stmatrix in this warpgroup's
  // Q slab (no GEMM reads it any more) and written by one 64-row TMA store, which also clips rows
  // past the sequence: four-byte stores from every thread held the warps on the LSU for about a
  // tenth of the kernel (ncu). LSE in natural log.
  Tensor out_frag = make_fragment_like<Element>(acc_o);
  Tensor out_rc = make_tensor(out_frag.data(), rowcol(out_frag.layout()));
  Tensor tOcO = thr_pv.partition_C(make_identity_tensor(Shape<Int<kChunk>, HeadDim>{}));
  Tensor o_pos = make_tensor(tOcO.data(), rowcol(tOcO.layout()));
  const int row0 = qb * 128 + wg * kChunk;
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const float sum = quad_sum(softmax.row_sum[r]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const float inv_den = kLinear && den[r] > 0.f ? 1.f / den[r] : 0.f;
    CUTE_UNROLL
    for (int j = 0; j < size<1>(o_rc); ++j)
      out_rc(r, j) = Element(kLinear ? o_rc(r, j) * inv + l_rc(r, j) * inv_den : o_rc(r, j) * inv);
    const int token = row0 + get<0>(o_pos(r, 0));
    if (tid % 4 == 0 && token < p.tokens)
      p.lse[(int64_t(b) * p.heads + h) * p.tokens + token] =
          sum > 0.f ? (softmax.row_max[r] + log2f(sum)) * float(M_LN2) : -INFINITY;
  }
  Tensor sO = sQ(_, _, wg);
  auto store_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_pv);
  auto thr_store = store_o.get_thread_slice(tid);
  copy(store_o, thr_store.retile_S(out_frag), thr_store.partition_D(sO));
  tma_store_fence();  // the TMA engine reads what these generic stores wrote
  warpgroup_sync(wg);
  if (tid == 0) {
    auto tma_o = p.tma_o.get_slice(_0{});
    Tensor gO = local_tile(p.tma_o.get_tma_tensor(make_shape(p.tokens, HeadDim{}, p.heads, p.batch))(_, _, h, b),
                           Shape<Int<kChunk>, HeadDim>{}, make_coord(_, _0{}));  // (64, D, query chunks)
    copy(p.tma_o, tma_o.partition_S(sO), tma_o.partition_D(gO)(_, _, _, 2 * qb + wg));
    tma_store_arrive();
    tma_store_wait<0>();  // the slab must outlive the store's reads
  }
  // Keep warpgroup 1's barrier balanced: warpgroup 2 arrived once more than it synced.
  if (wg == 0) named_sync(1);
#endif
}

template <class Element, int kHeadDim, bool kLinear>
cudaError_t launch(const BlockSparseAttentionArgs& a, cudaStream_t stream) {
  using Cfg = KernelConfig<Element, kHeadDim, kLinear>;
  auto gmem = [&](const void* ptr, const int64_t* strides) {
    return make_tensor(make_gmem_ptr(static_cast<Element const*>(ptr)),
                       make_shape(int32_t(a.tokens), typename Cfg::HeadDim{}, int32_t(a.heads), int32_t(a.batch)),
                       make_stride(strides[1], _1{}, strides[2], strides[0]));
  };
  const int64_t num_q_blocks = (a.tokens + 127) / 128;
  // kLinear: the complement sums as one (D, D) tile per CSR row, and W [D, D] as one tile. The
  // other instances never read these descriptors, so they are not encoded there.
  typename Cfg::TmaKV tma_hc{}, tma_w{};
  if constexpr (kLinear) {
    const auto tiles = [&](const void* ptr, int64_t count, int64_t tile_stride) {
      return make_tma_copy(
          SM90_TMA_LOAD{},
          make_tensor(make_gmem_ptr(static_cast<Element const*>(ptr)),
                      make_shape(int32_t(kHeadDim), typename Cfg::HeadDim{}, int32_t(count), int32_t(1)),
                      make_stride(int64_t(kHeadDim), _1{}, tile_stride, tile_stride * count)),
          typename Cfg::SmemLayoutChunk{});
    };
    tma_hc = tiles(a.complement_sums, a.batch * a.heads * num_q_blocks, int64_t(kHeadDim + 1) * kHeadDim);
    tma_w = tiles(a.projection, 1, int64_t(kHeadDim) * kHeadDim);
  }
  typename Cfg::Params p{
      make_tma_copy(SM90_TMA_LOAD{}, gmem(a.q, a.q_strides), typename Cfg::SmemLayoutQ{}(_, _, _0{})),
      make_tma_copy(SM90_TMA_LOAD{}, gmem(a.k, a.k_strides), typename Cfg::SmemLayoutChunk{}),
      make_tma_copy(SM90_TMA_LOAD{}, gmem(a.v, a.v_strides), typename Cfg::SmemLayoutChunk{}),
      tma_hc,
      tma_w,
      static_cast<Element const*>(a.complement_sums),
      make_tma_copy(SM90_TMA_STORE{}, gmem(a.out, a.out_strides), typename Cfg::SmemLayoutQ{}(_, _, _0{})),
      a.lse,
      a.row_offsets,
      a.col_indices,
      a.row_order,
      int32_t(a.tokens),
      int32_t(a.heads),
      int32_t(a.batch),
      int32_t(num_q_blocks),
      int32_t(a.k_block / kChunk),
      float(a.scale * M_LOG2E)};
  const int rows = int(a.batch * a.heads * p.num_q_blocks);
  if (rows == 0) return cudaSuccess;
  const size_t smem = sizeof(typename Cfg::SharedStorage) + 1024;
  static_assert(sizeof(typename Cfg::SharedStorage) + 1024 <= 227 * 1024, "more shared memory than an H100 CTA has");
  auto kernel = block_sparse_attention_kernel<Element, kHeadDim, kLinear>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  kernel<<<rows, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

// Rows longest first, a stable counting sort by length in one CTA: one launch where at::argsort
// took nine (~50 µs a call at the Wan shape, ncu). Stable, because rows next to each other in the
// CSR share a (batch, head) and so their K and V in L2: an order placed by atomics measured
// slower. A map whose rows all have one length keeps the identity order (top-k maps say so on the
// host, BlockCsr::row_length, and skip this launch; a mask's map can still come here).
constexpr int kOrderThreads = 1024, kOrderBinsPerThread = 4, kOrderBins = kOrderThreads * kOrderBinsPerThread;

__global__ void __launch_bounds__(kOrderThreads) longest_first_kernel(const int32_t* offsets, int32_t rows,
                                                                      int32_t* order) {
  using BlockScan = cub::BlockScan<int32_t, kOrderThreads>;
  __shared__ typename BlockScan::TempStorage scan;
  __shared__ int32_t start[kOrderBins];
  __shared__ int32_t shortest, longest;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Bin 0 holds the longest rows; rows of kOrderBins - 1 blocks or more share it.
  auto bin_of_length = [](int32_t length) { return kOrderBins - 1 - min(length, kOrderBins - 1); };
  auto bin = [&](int r) { return bin_of_length(__ldg(offsets + r + 1) - __ldg(offsets + r)); };
  if (threadIdx.x == 0) shortest = INT32_MAX, longest = 0;
  for (int i = threadIdx.x; i < kOrderBins; i += kOrderThreads) start[i] = 0;
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += kOrderThreads) {
    const int32_t length = __ldg(offsets + r + 1) - __ldg(offsets + r);
    atomicAdd(&start[bin_of_length(length)], 1);
    atomicMin(&shortest, length);
    atomicMax(&longest, length);
  }
  __syncthreads();
  if (shortest == longest) {
    for (int r = threadIdx.x; r < rows; r += kOrderThreads) order[r] = r;
    return;
  }

  // Each bin's first position: an exclusive scan of the counts, kOrderBinsPerThread consecutive
  // bins a thread.
  int32_t count[kOrderBinsPerThread];
  for (int i = 0; i < kOrderBinsPerThread; ++i) count[i] = start[threadIdx.x * kOrderBinsPerThread + i];
  BlockScan(scan).ExclusiveSum(count, count);
  for (int i = 0; i < kOrderBinsPerThread; ++i) start[threadIdx.x * kOrderBinsPerThread + i] = count[i];
  __syncthreads();

  // Stable placement: rows in chunks of kOrderThreads, the warps in turn, a warp's lanes by their
  // rank among the lanes before them with the same bin.
  for (int chunk = 0; chunk < rows; chunk += kOrderThreads) {
    const int r = chunk + threadIdx.x;
    const bool valid = r < rows;
    const int b = valid ? bin(r) : -1;
    const unsigned same = __match_any_sync(0xffffffff, b);
    const int rank = __popc(same & ((1u << lane) - 1));
    for (int w = 0; w < kOrderThreads / 32; ++w) {
      if (warp == w) {
        const int pos = valid ? start[b] + rank : 0;
        __syncwarp();
        if (valid && rank == 0) start[b] += __popc(same);
        if (valid) order[pos] = r;
      }
      __syncthreads();
    }
  }
}

}  // namespace

bool block_sparse_attention_kernel_available() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  // Asked on every attention call; a device's answer never changes, so it is looked up once.
  static std::array<std::atomic<int8_t>, 64> known{};  // 0: not asked yet, 1: no, 2: yes
  if (device < int(known.size()) && known[device] != 0) return known[device] == 2;
  int major = 0, minor = 0;
  const bool sm90 = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
                    major == 9 && minor == 0;
  if (device < int(known.size())) known[device] = sm90 ? 2 : 1;
  return sm90;
}

bool block_sparse_attention_kernel_supports(const BlockSparseAttentionArgs& a) {
  auto aligned = [](const void* ptr, const int64_t* strides) {
    // TMA: 16-byte aligned base and strides (2-byte elements).
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && strides[0] % 8 == 0 && strides[1] % 8 == 0 &&
           strides[2] % 8 == 0;
  };
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (a.complement_sums && (a.head_dim != 128 || !a.projection || !aligned16(a.complement_sums) ||
                            !aligned16(a.projection)))
    return false;
  return (a.head_dim == 64 || a.head_dim == 128) && (a.k_block == 64 || a.k_block == 128) &&
         a.tokens < (int64_t(1) << 31) / 2 && aligned(a.q, a.q_strides) && aligned(a.k, a.k_strides) &&
         aligned(a.v, a.v_strides) && aligned(a.out, a.out_strides);
}

cudaError_t launch_block_sparse_attention(const BlockSparseAttentionArgs& a, cudaStream_t stream) {
  const bool bf16 = a.dtype == AttentionDtype::kBFloat16;
  if (a.complement_sums) {
    if (a.head_dim != 128) return cudaErrorInvalidValue;
    return bf16 ? launch<cutlass::bfloat16_t, 128, true>(a, stream) : launch<cutlass::half_t, 128, true>(a, stream);
  }
  if (a.head_dim == 64)
    return bf16 ? launch<cutlass::bfloat16_t, 64, false>(a, stream) : launch<cutlass::half_t, 64, false>(a, stream);
  return bf16 ? launch<cutlass::bfloat16_t, 128, false>(a, stream) : launch<cutlass::half_t, 128, false>(a, stream);
}

cudaError_t launch_longest_first_order(const int32_t* row_offsets, int64_t rows, int32_t* order,
                                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  longest_first_kernel<<<1, kOrderThreads, 0, stream>>>(row_offsets, int32_t(rows), order);
  return cudaGetLastError();
}

}  // namespace ditkit::cuda
