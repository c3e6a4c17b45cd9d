// SLA's per-key-block summaries on Hopper (sm_90a), unprojected: h_j = φ(K_j)ᵀV_j [D, D] and
// z_j = Σ_t φ(k_t) [D], φ = softmax over D, for the fused path (block_sparse_attention_with_linear
// projects once per query row). The same item as complement_linear_attention.cu's wmma kernel,
// built like the attention kernel: one thread loads K_j and V_j with TMA into 128-byte swizzled
// shared memory, each behind a barrier of its own; 256 threads turn K_j into φ(K_j) in place
// (16-byte vectors, a row over 16 lanes) while V_j still loads, and sum z_j; then two warpgroups
// each take 64 rows of h_j in two SS wgmmas of 64 columns, φ(K_j)ᵀ and V_j both read MN-major
// from the tiles as they lie (the layout the attention kernel reads V with). Small shared memory
// (72 KB at 128-token blocks) and few registers, so three CTAs an SM overlap each other's loads
// and math. Optionally k's block means too, from the raw K_j the feature loop reads anyway: a
// planner that scores blocks then needs no pass of its own over k.
#include "kernels/complement_linear_attention_cuda.h"

#include <cute/tensor.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>

#include "kernels/block_sparse_attention_cuda.h"
#include "kernels/cuda_elements.cuh"

namespace ditkit::cuda {

namespace {

using namespace cute;

constexpr int kChunk = 64;  // TMA unit: 64 token rows
constexpr int kThreads = 256;
constexpr int kD = 128;
constexpr int kVec = 8;                  // 16-bit elements in a 16-byte vector
[[maybe_unused]] constexpr int kLanesPerRow = kD / kVec;  // 16: a row's vectors in half a warp

template <class T> struct Cute;
template <> struct Cute<__nv_bfloat16> { using type = cutlass::bfloat16_t; };
template <> struct Cute<__half> { using type = cutlass::half_t; };

template <class T, int KB>
struct Config {
  using Element = typename Cute<T>::type;
  using SmemLayout = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{}, Shape<Int<KB>, Int<kD>>{}));
  using SmemChunk = decltype(composition(SmemLayout{}, Layout<Shape<Int<kChunk>, Int<kD>>, Stride<_1, Int<KB>>>{}));
  // The same bytes as (D, tokens): the MN-major A (φ(K)ᵀ) and B (V) of h = φ(K)ᵀV.
  using SmemLayoutT = decltype(composition(SmemLayout{}, make_ordered_layout(Shape<Int<kD>, Int<KB>>{}, Step<_2, _1>{})));
  // 64 x 64 of h_j per wgmma: half the accumulator registers of a 64 x 128 one, which lets three
  // CTAs share an SM (each warpgroup takes its 64 rows in two column halves).
  using TiledMma = decltype(make_tiled_mma(GMMA::ss_op_selector<Element, Element, float, Shape<_64, _64, Int<KB>>,
                                                                GMMA::Major::MN, GMMA::Major::MN>()));
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)),
                                          Shape<int32_t, Int<kD>, int32_t, int32_t>{},
                                          Stride<int64_t, _1, int64_t, int64_t>{}));
  using Tma = decltype(make_tma_copy(SM90_TMA_LOAD{}, GmemTensor{}, SmemChunk{}));

  struct SharedStorage {
    cute::array_aligned<Element, cosize_v<SmemLayout>, 1024> k;
    cute::array_aligned<Element, cosize_v<SmemLayout>, 1024> v;
    float z[kThreads / 32][kD];
    float k_sum[kThreads / 32][kD];
    uint64_t k_full, v_full;  // apart, so that φ(K_j) need not wait for V_j
  };
  struct Params {
    Tma tma_k, tma_v;
    Element* summaries;  // [B, H, NK, D + 1, D]
    Element* k_means;    // [B, NK, H, D] or null
    int32_t tokens, heads, num_k_blocks;
  };
};

template <class T, int KB>
__global__ void __launch_bounds__(kThreads, 3) block_summaries_sm90_kernel(const __grid_constant__ typename Config<T, KB>::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = Config<T, KB>;
  using Element = typename Cfg::Element;
  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename Cfg::SharedStorage*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  const int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int valid = min(KB, p.tokens - j * KB);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Cfg::SmemLayout{});
  if (threadIdx.x == 0) {
    cutlass::arch::ClusterTransactionBarrier::init(&ss.k_full, 1);
    cutlass::arch::ClusterTransactionBarrier::init(&ss.v_full, 1);
  }
  cutlass::arch::fence_barrier_init();
  __syncthreads();
  if (threadIdx.x == 0) {
    const auto shape = make_shape(p.tokens, Int<kD>{}, p.heads, int32_t(gridDim.z));
    auto load = [&](typename Cfg::Tma const& tma, Element* dst, uint64_t& full) {
      cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&full, KB * kD * sizeof(Element));
      Tensor g = local_tile(tma.get_tma_tensor(shape)(_, _, h, b), Shape<Int<kChunk>, Int<kD>>{}, make_coord(_, _0{}));
      auto slice = tma.get_slice(_0{});
      Tensor src = slice.partition_S(g);
      CUTE_UNROLL
      for (int c = 0; c < KB / kChunk; ++c) {
        const int offset = typename Cfg::SmemLayout{}(c * kChunk, 0);  // 1024-byte aligned: the swizzle keeps it
        Tensor chunk = make_tensor(make_smem_ptr(dst + offset), typename Cfg::SmemChunk{});
        copy(tma.with(full), src(_, _, _, j * (KB / kChunk) + c), slice.partition_D(chunk));
      }
    };
    load(p.tma_k, ss.k.data(), ss.k_full);
    load(p.tma_v, ss.v.data(), ss.v_full);
  }
  cutlass::arch::ClusterTransactionBarrier::wait(&ss.k_full, 0);

  // φ(K_j) in place, rounded to T as the tensor cores read it; rows past the sequence (zeros from
  // TMA) become zero features, so they add to neither h_j nor z_j. z_j from the rounded features,
  // k's block sum from the raw ones (those rows add zeros).
  const int col = threadIdx.x % kLanesPerRow * kVec;
  float z[kVec] = {}, k_sum[kVec] = {};
  CUTE_UNROLL
  for (int r = threadIdx.x / kLanesPerRow; r < KB; r += kThreads / kLanesPerRow) {
    T* at = reinterpret_cast<T*>(&sK(r, col));
    float f[kVec];
    load_vec(at, f);
    CUTE_UNROLL
    for (int e = 0; e < kVec; ++e) k_sum[e] += f[e];
    float m = f[0];
    CUTE_UNROLL
    for (int e = 1; e < kVec; ++e) m = fmaxf(m, f[e]);
    CUTE_UNROLL
    for (int o = kLanesPerRow / 2; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.f;
    CUTE_UNROLL
    for (int e = 0; e < kVec; ++e) s += (f[e] = __expf(f[e] - m));
    CUTE_UNROLL
    for (int o = kLanesPerRow / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    const float inv = r < valid ? 1.f / s : 0.f;
    CUTE_UNROLL
    for (int e = 0; e < kVec; ++e) {
      f[e] = to_float(from_float<T>(f[e] * inv));
      z[e] += f[e];
    }
    store_vec(at, f);
  }
  CUTE_UNROLL
  for (int e = 0; e < kVec; ++e) {
    z[e] += __shfl_xor_sync(0xffffffffu, z[e], kLanesPerRow);
    k_sum[e] += __shfl_xor_sync(0xffffffffu, k_sum[e], kLanesPerRow);
  }
  if (lane < kLanesPerRow) {
    CUTE_UNROLL
    for (int e = 0; e < kVec; ++e) {
      ss.z[warp][col + e] = z[e];
      ss.k_sum[warp][col + e] = k_sum[e];
    }
  }
  cutlass::arch::fence_view_async_shared();  // the features, written by threads, read by wgmma
  __syncthreads();

  Element* out = p.summaries + ((int64_t(b) * p.heads + h) * p.num_k_blocks + j) * (kD + 1) * kD;
  if (threadIdx.x < kD) {
    float sum = 0.f;
    CUTE_UNROLL
    for (int w = 0; w < kThreads / 32; ++w) sum += ss.z[w][threadIdx.x];
    out[kD * kD + threadIdx.x] = Element(sum);
  } else if (p.k_means) {  // the other 128 threads, the other column sums
    const int d = threadIdx.x - kD;
    float sum = 0.f;
    CUTE_UNROLL
    for (int w = 0; w < kThreads / 32; ++w) sum += ss.k_sum[w][d];
    p.k_means[((int64_t(b) * p.num_k_blocks + j) * p.heads + h) * kD + d] = Element(sum / float(valid));
  }

  // Warpgroup w: rows [64w, 64w + 64) of h_j, columns [0, 64) then [64, 128); the first half
  // waits in registers as T while the second is computed.
  cutlass::arch::ClusterTransactionBarrier::wait(&ss.v_full, 0);
  const int wg = threadIdx.x / 128;
  typename Cfg::TiledMma mma;
  auto thr = mma.get_thread_slice(threadIdx.x % 128);
  Tensor sA = local_tile(make_tensor(make_smem_ptr(ss.k.data()), typename Cfg::SmemLayoutT{}), Shape<_64, Int<KB>>{},
                         make_coord(wg, _0{}));
  Tensor tA = thr.make_fragment_A(thr.partition_A(sA));
  Tensor acc = partition_fragment_C(mma, Shape<_64, _64>{});
  cutlass::Array<Element, decltype(size(acc))::value> first_half;
  CUTE_UNROLL
  for (int half = 0; half < 2; ++half) {
    Tensor sB = local_tile(make_tensor(make_smem_ptr(ss.v.data()), typename Cfg::SmemLayoutT{}), Shape<_64, Int<KB>>{},
                           make_coord(half, _0{}));
    Tensor tB = thr.make_fragment_B(thr.partition_B(sB));
    warpgroup_fence_operand(acc);
    warpgroup_arrive();
    mma.accumulate_ = GMMA::ScaleOut::Zero;
    CUTE_UNROLL
    for (int kb = 0; kb < size<2>(tA); ++kb) {
      cute::gemm(mma, tA(_, _, kb), tB(_, _, kb), acc);
      mma.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc);
    if (half == 0) {
      CUTE_UNROLL
      for (int i = 0; i < size(acc); ++i) first_half[i] = Element(acc(i));
    }
  }

  // h_j out through shared memory, so that global stores are whole 16-byte vectors of a row: each
  // warpgroup stages its 64 rows in a tile it has finished reading (K's or V's), the 16-byte
  // chunks of row r at chunk ^ (r % 8), which keeps both the pair writes and the vector reads
  // free of bank conflicts.
  __syncthreads();  // both warpgroups are done with both tiles
  Element* stage = wg == 0 ? ss.k.data() : ss.v.data();
  auto staged = [&](int row, int c) { return stage + row * kD + ((c / kVec) ^ (row % 8)) * kVec + c % kVec; };
  Tensor pos = thr.partition_C(make_identity_tensor(Shape<_64, _64>{}));
  CUTE_UNROLL
  for (int i = 0; i < size(acc); i += 2) {
    // A thread's values come in pairs of neighbouring columns.
    const int row = get<0>(pos(i)), c = get<1>(pos(i));
    cutlass::Array<Element, 2> pair;
    pair[0] = first_half[i];
    pair[1] = first_half[i + 1];
    *reinterpret_cast<cutlass::Array<Element, 2>*>(staged(row, c)) = pair;
    pair[0] = Element(acc(i));
    pair[1] = Element(acc(i + 1));
    *reinterpret_cast<cutlass::Array<Element, 2>*>(staged(row, c + 64)) = pair;
  }
  asm volatile("bar.sync %0, 128;" ::"r"(1 + wg));  // this warpgroup's 128 threads
  for (int v = threadIdx.x % 128; v < 64 * kLanesPerRow; v += 128) {
    const int row = v / kLanesPerRow, c = v % kLanesPerRow * kVec;
    *reinterpret_cast<uint4*>(out + (wg * 64 + row) * kD + c) = *reinterpret_cast<const uint4*>(staged(row, c));
  }
#endif
}

template <class T, int KB>
cudaError_t launch(const ComplementLinearArgs& a, cudaStream_t stream) {
  using Cfg = Config<T, KB>;
  using Element = typename Cfg::Element;
  const int64_t es = sizeof(Element);
  auto tma = [&](const void* ptr, const int64_t* strides) {
    auto g = make_tensor(make_gmem_ptr(static_cast<Element const*>(ptr)),
                         make_shape(int32_t(a.tokens), Int<kD>{}, int32_t(a.heads), int32_t(a.batch)),
                         make_stride(strides[1] / es, _1{}, strides[2] / es, strides[0] / es));
    return make_tma_copy(SM90_TMA_LOAD{}, g, typename Cfg::SmemChunk{});
  };
  const int64_t nk = (a.tokens + KB - 1) / KB;
  typename Cfg::Params p{tma(a.k, a.k_strides), tma(a.v, a.v_strides), static_cast<Element*>(a.summaries),
                         static_cast<Element*>(a.k_means), int32_t(a.tokens), int32_t(a.heads), int32_t(nk)};
  const int smem = int(sizeof(typename Cfg::SharedStorage)) + 1024;
  auto kernel = block_summaries_sm90_kernel<T, KB>;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  kernel<<<dim3(unsigned(nk), unsigned(a.heads), unsigned(a.batch)), kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  return a.k_block == 64 ? launch<T, 64>(a, stream) : launch<T, 128>(a, stream);
}

}  // namespace

bool block_summaries_sm90_support(const ComplementLinearArgs& a) {
  return !a.projection && a.head_dim == kD && (a.k_block == 64 || a.k_block == 128) && a.tokens < (int64_t(1) << 31) &&
         a.heads < 65536 && a.batch < 65536 && block_sparse_attention_kernel_available();
}

cudaError_t launch_block_summaries_sm90(const ComplementLinearArgs& a, cudaStream_t stream) {
  if (!block_summaries_sm90_support(a)) return cudaErrorInvalidValue;
  if (a.batch == 0 || a.heads == 0 || a.tokens == 0) return cudaSuccess;
  return a.type == ElementType::kBF16 ? launch_for<__nv_bfloat16>(a, stream) : launch_for<__half>(a, stream);
}

}  // namespace ditkit::cuda
