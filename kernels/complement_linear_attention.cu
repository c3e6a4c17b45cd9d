// SLA's projected linear branch for inference: two kernels around the 0/1 GEMM that forms the
// complement sums (complement_linear_attention.cpp), and the small one that builds its 0/1 map
// from the block CSR. The two are persistent: each CTA loops over its share of the work items,
// copying the next one's tiles into shared memory (cp.async, two buffers) while it computes the
// current one, so loads and math overlap. They compute the feature map φ = softmax over D in fp32
// and round it once to the inputs' dtype for the tensor cores (wmma 16x16x16, fp32
// accumulation). The normalising sums use those same rounded features, so numerator and
// denominator see one φ. The projection is applied to the block summaries (h_j·Wᵀ, D x D each),
// the one place where it costs no pass over the tokens.
#include <cuda_pipeline.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/complement_linear_attention_cuda.h"
#include "kernels/cuda_elements.cuh"

namespace ditkit::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kQueryBlock = 128;
constexpr int kTile = 16;  // wmma's m, n and k
static_assert(kWarps * kTile == kQueryBlock, "the combine kernel gives each warp 16 query rows");
// CTAs per SM the register budget must allow (128 registers a thread); three spill.
constexpr int kMinBlocks = 2;

// Shared-memory rows padded by 16 bytes, so fragment loads of consecutive rows spread over the
// banks; fp32 staging rows likewise.
template <typename T, int D>
constexpr int kLd = D + 16 / int(sizeof(T));
template <int D>
constexpr int kLdF = D + 4;

// kRows rows of D elements as 16-byte vectors in registers: a row's D/8 vectors sit in D/8
// consecutive lanes, so a row's reductions are shuffles within those lanes. All loads are
// issued before any is used.
template <typename T, int D, int kRows>
struct RowVectors {
  static constexpr int kPerRow = D / kVecElems<T>;
  static constexpr int kRowsPerPass = kThreads / kPerRow;
  static constexpr int kPerThread = kRows / kRowsPerPass;
  static_assert(kRows % kRowsPerPass == 0, "every thread holds the same number of vectors");
  uint4 v[kPerThread];

  __device__ static int row(int i) { return int(threadIdx.x) / kPerRow + i * kRowsPerPass; }
  __device__ static int col() { return int(threadIdx.x) % kPerRow * kVecElems<T>; }

  // Row r at src + r·stride bytes; rows from `valid` on are zeros (padding past S).
  __device__ void load(const char* src, int64_t stride, int valid) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i)
      v[i] = row(i) < valid ? *reinterpret_cast<const uint4*>(src + row(i) * stride + col() * int(sizeof(T)))
                            : make_uint4(0, 0, 0, 0);
  }
  __device__ void store(T* dst, int ld) const {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) *reinterpret_cast<uint4*>(dst + row(i) * ld + col()) = v[i];
  }
  // load() then store() for rows that need no arithmetic, bypassing registers (cp.async): the
  // copy completes at __pipeline_wait_prior.
  __device__ static void copy_async(T* dst, int ld, const char* src, int64_t stride, int valid) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      T* d = dst + row(i) * ld + col();
      if (row(i) < valid)
        __pipeline_memcpy_async(d, src + row(i) * stride + col() * int(sizeof(T)), 16);
      else
        *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
};

template <int kLanes>
__device__ __forceinline__ float lanes_max(float x) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
template <int kLanes>
__device__ __forceinline__ float lanes_sum(float x) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// φ of one vector of a row spread over kLanes lanes, in fp32, then rounded to T (f holds the
// rounded values, as the tensor cores will see them).
template <typename T, int kLanes>
__device__ __forceinline__ void softmax_features(const uint4& raw, float (&f)[kVecElems<T>]) {
  constexpr int kVec = kVecElems<T>;
  unpack_vec<T>(raw, f);
  float m = f[0];
#pragma unroll
  for (int e = 1; e < kVec; ++e) m = fmaxf(m, f[e]);
  m = lanes_max<kLanes>(m);
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    f[e] = __expf(f[e] - m);
    s += f[e];
  }
  const float inv = 1.f / lanes_sum<kLanes>(s);
#pragma unroll
  for (int e = 0; e < kVec; ++e) f[e] = to_float(from_float<T>(f[e] * inv));
}

// One accumulator tile per warp staged in fp32 (rows padded like kLdF), because wmma's
// accumulator layout is opaque: rounding to T goes through shared memory.
constexpr int kLdTile = kTile + 4;
constexpr int kTileStage = kTile * kLdTile;

// A [D, D] product's 16x16 tiles split over the warps, kWarpRows x kWarpCols blocks of
// kRows x kCols tiles.
template <int D>
struct WarpTiles {
  static constexpr int kWarpRows = 4, kWarpCols = kWarps / kWarpRows;
  static constexpr int kRows = D / kTile / kWarpRows, kCols = D / kTile / kWarpCols;
  static_assert(kRows * kWarpRows * kTile == D && kCols * kWarpCols * kTile == D, "the warps cover the product");
  using Acc = wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float>[kRows][kCols];

  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) wmma::fill_fragment(acc[r][c], 0.f);
    }
  }

  // Element (r, c) of a matrix stored in Layout, ld elements between rows (row-major) or columns.
  template <typename Layout, typename T>
  __device__ static const T* element(const T* m, int ld, int r, int c) {
    return std::is_same_v<Layout, wmma::row_major> ? m + r * ld + c : m + c * ld + r;
  }

  // acc += A·B over kDepth for the tiles from row tile r0 and column tile c0 on, A and B in
  // shared memory. Two steps at a time: unrolled further, the fragments fetched ahead spill at
  // 128 registers.
  template <int kDepth, typename LayoutA, typename LayoutB, typename T>
  __device__ static void mma(Acc& acc, const T* a, const T* b, int ld, int r0, int c0) {
#pragma unroll 2
    for (int k0 = 0; k0 < kDepth; k0 += kTile) {
      wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, T, LayoutA> fa[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) wmma::load_matrix_sync(fa[r], element<LayoutA>(a, ld, (r0 + r) * kTile, k0), ld);
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, T, LayoutB> fb;
        wmma::load_matrix_sync(fb, element<LayoutB>(b, ld, k0, (c0 + c) * kTile), ld);
#pragma unroll
        for (int r = 0; r < kRows; ++r) wmma::mma_sync(acc[r][c], fa[r], fb, acc[r][c]);
      }
    }
  }

  // The tiles rounded to T into the row-major dst (shared or global memory), one 16-byte vector
  // a lane per tile, each through the warp's staging tile.
  template <typename T>
  __device__ static void store_rounded(const Acc& acc, T* dst, int64_t ld, int r0, int c0, float* stage) {
    constexpr int kVec = kVecElems<T>, kPerRow = kTile / kVec;
    static_assert(kTile * kTile == 32 * kVec, "a tile is one vector a lane");
    const int lane = threadIdx.x % 32, row = lane / kPerRow, col = lane % kPerRow * kVec;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        wmma::store_matrix_sync(stage, acc[r][c], kLdTile, wmma::mem_row_major);
        __syncwarp();
        float f[kVec];
#pragma unroll
        for (int e = 0; e < kVec; ++e) f[e] = stage[row * kLdTile + col + e];
        store_vec(dst + ((r0 + r) * kTile + row) * ld + (c0 + c) * kTile + col, f);
        __syncwarp();  // the next tile reuses the stage
      }
    }
  }
};

// Work item n of a persistent kernel, items ordered by (batch, head, block): CTA c takes items c,
// c + grid, ... and copies the next one's tiles while computing the current one.
struct WorkItem {
  int64_t block, h, b;
  __device__ WorkItem(int64_t n, int64_t blocks, int64_t heads)
      : block(n % blocks), h(n / blocks % heads), b(n / blocks / heads) {}
};

// The summaries kernel streams a key block's K and V rows through two buffers of kChunk rows
// each, so the next chunk lands while this one is computed. Chunks of 64 rows rather than whole
// blocks keep two CTAs an SM at D = 128.
constexpr int kChunk = 64;

// The summaries kernel's shared memory: the two chunk buffers (K rows, then V rows), the last
// chunk's becoming h_j; z_j's per-warp partial sums, then the warps' staging tiles; W, loaded
// once per CTA.
template <typename T, int D>
struct SummariesSmem {
  static constexpr int kBuffer = (2 * kChunk > D ? 2 * kChunk : D) * kLd<T, D> * int(sizeof(T));
  static constexpr int kScratch = (D > kTileStage ? D : kTileStage) * kWarps * int(sizeof(float));
  static constexpr int kBytes = 2 * kBuffer + kScratch + D * kLd<T, D> * int(sizeof(T));
};

// Key block j of (batch b, head h): h_j = φ(K_j)ᵀV_j [D, D] on the tensor cores, rounded to T,
// times Wᵀ in a second pass, and z_j = Σ_t φ(k_t) [D] unprojected (den needs no projection),
// written as the D + 1 rows of its summary. Rows past S are zero features and zero values, so a
// partial block's padding adds nothing. The chunks meet the accumulators and each thread's z in
// the block's row order, so the sums are those of the whole block at once.
template <typename T, int D, int KB>
__global__ void __launch_bounds__(kThreads, kMinBlocks) block_summaries_kernel(ComplementLinearArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kVec = kVecElems<T>, ld = kLd<T, D>, kChunks = KB / kChunk;
  static_assert(KB % kChunk == 0, "a key block is whole chunks");
  using Rows = RowVectors<T, D, kChunk>;
  using Smem = SummariesSmem<T, D>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Buffer s % 2: [kChunk, ld] K (then φ(K)) rows, [kChunk, ld] V rows; after a block's last
  // chunk, h_j [D, ld].
  auto buffer = [&](int s) { return reinterpret_cast<T*>(smem + s % 2 * Smem::kBuffer); };
  float* zpart = reinterpret_cast<float*>(smem + 2 * Smem::kBuffer);        // [kWarps, D]: z_j per warp
  float* stage = zpart + warp * kTileStage;                                 // the warp's, once zpart is read
  T* ws = reinterpret_cast<T*>(smem + 2 * Smem::kBuffer + Smem::kScratch);  // [D, ld]: W
  const int64_t blocks = (a.tokens + KB - 1) / KB, items = blocks * a.heads * a.batch;

  // Chunk c of an item's K and V rows into buf; rows past S (all of them in a chunk past S) are
  // zeros.
  auto fetch = [&](int64_t item, int c, T* buf) {
    const WorkItem w(item, blocks, a.heads);
    const int64_t first = w.block * KB + c * kChunk;
    const int valid = a.tokens - first < kChunk ? int(a.tokens - first) : kChunk;
    Rows::copy_async(buf, ld,
                     static_cast<const char*>(a.k) + w.b * a.k_strides[0] + first * a.k_strides[1] + w.h * a.k_strides[2],
                     a.k_strides[1], valid);
    Rows::copy_async(buf + kChunk * ld, ld,
                     static_cast<const char*>(a.v) + w.b * a.v_strides[0] + first * a.v_strides[1] + w.h * a.v_strides[2],
                     a.v_strides[1], valid);
  };

  // h_j's tiles split over the warps as 4 x 2 blocks of tiles (2 x 4 tiles each at D = 128),
  // which load fewer fragments per step than tile rows would. Both passes share the split.
  using Tiles = WarpTiles<D>;
  const int r0 = warp / Tiles::kWarpCols * Tiles::kRows, c0 = warp % Tiles::kWarpCols * Tiles::kCols;
  // W lands with the first chunk; the launch gives every CTA an item.
  RowVectors<T, D, D>::copy_async(ws, ld, static_cast<const char*>(a.projection), D * int(sizeof(T)), D);
  fetch(blockIdx.x, 0, buffer(0));
  __pipeline_commit();
  int s = 0;  // the pipeline step: its chunk sits in buffer(s)
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t first = WorkItem(item, blocks, a.heads).block * KB;
    const int64_t valid = a.tokens - first;  // rows from here on are padding
    // This thread's columns are the same in every row it holds: it sums them as it goes.
    float z[kVec] = {};
    typename Tiles::Acc acc;
    Tiles::zero(acc);
    T* fk = nullptr;
    for (int c = 0; c < kChunks; ++c, ++s) {
      fk = buffer(s);
      __syncthreads();  // the previous step, the last to read buffer(s + 1), is done with it
      if (c + 1 < kChunks)
        fetch(item, c + 1, buffer(s + 1));
      else if (item + gridDim.x < items)
        fetch(item + gridDim.x, 0, buffer(s + 1));
      __pipeline_commit();  // empty at the last step: the wait below still counts one group a step
      __pipeline_wait_prior(1);
      // Each thread turns the K vectors it copied into φ(K) in place: no barrier in between.
#pragma unroll
      for (int i = 0; i < Rows::kPerThread; ++i) {
        T* p = fk + Rows::row(i) * ld + Rows::col();
        float f[kVec];
        softmax_features<T, Rows::kPerRow>(*reinterpret_cast<const uint4*>(p), f);
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          if (c * kChunk + Rows::row(i) >= valid) f[e] = 0.f;
          z[e] += f[e];
        }
        store_vec(p, f);
      }
      if (c + 1 == kChunks) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
#pragma unroll
          for (int o = Rows::kPerRow; o < 32; o *= 2) z[e] += __shfl_xor_sync(0xffffffffu, z[e], o);
        }
        if (lane < Rows::kPerRow) {
#pragma unroll
          for (int e = 0; e < kVec; ++e) zpart[warp * D + Rows::col() + e] = z[e];
        }
      }
      __syncthreads();
      // φ(K)ᵀ is φ(K) read column-major.
      Tiles::template mma<kChunk, wmma::col_major, wmma::row_major>(acc, fk, fk + kChunk * ld, ld, r0, c0);
    }

    T* out = static_cast<T*>(a.summaries) + item * (D + 1) * D;
    if (threadIdx.x < D) {
      float z_sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) z_sum += zpart[w * D + threadIdx.x];
      out[D * D + threadIdx.x] = from_float<T>(z_sum);
    }
    T* hs = fk;
    __syncthreads();  // h_j overwrites the last chunk, the staging tiles z's partial sums
    Tiles::store_rounded(acc, hs, ld, r0, c0, stage);
    Tiles::zero(acc);
    __syncthreads();
    // Wᵀ is W read column-major.
    Tiles::template mma<D, wmma::row_major, wmma::col_major>(acc, hs, ws, ld, r0, c0);
    Tiles::store_rounded(acc, out, D, r0, c0, stage);
  }
}

// The combine kernel's two buffers: per query block its Q rows (then φ(Q)) and H_c, over which
// the fp32 product φ(Q)H_c is staged; its out rows; Z_c. Then the block's denominators.
template <typename T, int D>
struct CombineSmem {
  static constexpr int kTileBytes = (kQueryBlock + D) * kLd<T, D> * int(sizeof(T));
  static constexpr int kStageBytes = kQueryBlock * kLdF<D> * int(sizeof(float));
  static constexpr int kTiles = kTileBytes > kStageBytes ? kTileBytes : kStageBytes;
  static constexpr int kOut = kTiles, kZ = kOut + kQueryBlock * kLd<T, D> * int(sizeof(T));
  static constexpr int kBuffer = kZ + D * int(sizeof(T));
  static constexpr int kBytes = 2 * kBuffer + kQueryBlock * int(sizeof(float));
  static_assert(kBuffer % 16 == 0, "cp.async writes 16-byte aligned vectors");
};

// Query block i of (batch b, head h): out rows += φ(Q_i)H_c / (φ(Q_i)·Z_c), the numerator on the
// tensor cores, the denominator per row in fp32. Rows past S are neither read nor written.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, kMinBlocks) linear_combine_kernel(ComplementLinearArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kVec = kVecElems<T>, ld = kLd<T, D>, ldf = kLdF<D>;
  using QRows = RowVectors<T, D, kQueryBlock>;
  using Smem = CombineSmem<T, D>;
  float* den = reinterpret_cast<float*>(smem + 2 * Smem::kBuffer);  // [128]
  const int warp = threadIdx.x / 32;
  const int64_t blocks = (a.tokens + kQueryBlock - 1) / kQueryBlock, items = blocks * a.heads * a.batch;

  auto out_rows = [&](const WorkItem& w) {
    return static_cast<char*>(a.out) + w.b * a.out_strides[0] + w.block * kQueryBlock * a.out_strides[1] +
           w.h * a.out_strides[2];
  };
  // An item's Q rows, H_c, out rows and Z_c into buffer n % 2; rows past S are zeros.
  auto fetch = [&](int64_t item, int64_t n) {
    unsigned char* buf = smem + n % 2 * Smem::kBuffer;
    const WorkItem w(item, blocks, a.heads);
    const int64_t first = w.block * kQueryBlock;
    const int valid = a.tokens - first < kQueryBlock ? int(a.tokens - first) : kQueryBlock;
    const T* sums = static_cast<const T*>(a.complement_sums) + item * (D + 1) * D;
    T* qs = reinterpret_cast<T*>(buf);
    QRows::copy_async(qs, ld,
                      static_cast<const char*>(a.q) + w.b * a.q_strides[0] + first * a.q_strides[1] + w.h * a.q_strides[2],
                      a.q_strides[1], valid);
    RowVectors<T, D, D>::copy_async(qs + kQueryBlock * ld, ld, reinterpret_cast<const char*>(sums), D * int(sizeof(T)), D);
    QRows::copy_async(reinterpret_cast<T*>(buf + Smem::kOut), ld, out_rows(w), a.out_strides[1], valid);
    if (threadIdx.x < D / kVec)
      __pipeline_memcpy_async(reinterpret_cast<T*>(buf + Smem::kZ) + threadIdx.x * kVec, sums + D * D + threadIdx.x * kVec, 16);
  };

  fetch(blockIdx.x, 0);  // the launch gives every CTA an item
  __pipeline_commit();
  int64_t n = 0;  // the pipeline step: its item sits in buffer n % 2
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x, ++n) {
    unsigned char* buf = smem + n % 2 * Smem::kBuffer;
    T* fq = reinterpret_cast<T*>(buf);                       // [128, ld]: Q_i, then φ(Q_i)
    const T* hc = fq + kQueryBlock * ld;                     // [D, ld]: H_c
    float* stage = reinterpret_cast<float*>(buf);            // [128, ldf]: φ(Q_i)H_c, once the tiles are used
    const T* os = reinterpret_cast<T*>(buf + Smem::kOut);    // [128, ld]: the out rows
    const T* zc = reinterpret_cast<T*>(buf + Smem::kZ);      // [D]: Z_c
    const WorkItem w(item, blocks, a.heads);
    const int64_t first = w.block * kQueryBlock;
    const int valid = a.tokens - first < kQueryBlock ? int(a.tokens - first) : kQueryBlock;

    __syncthreads();  // the previous step, the last to read buffer n + 1 and den, is done with them
    if (item + gridDim.x < items) fetch(item + gridDim.x, n + 1);
    __pipeline_commit();  // empty at the last step: the wait below still counts one group a step
    __pipeline_wait_prior(1);
    __syncthreads();  // Z_c, H_c and the out rows, copied by every thread

#pragma unroll
    for (int r = 0; r < QRows::kPerThread; ++r) {
      T* p = fq + QRows::row(r) * ld + QRows::col();
      float f[kVec];
      softmax_features<T, QRows::kPerRow>(*reinterpret_cast<const uint4*>(p), f);
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) dot += f[e] * to_float(zc[QRows::col() + e]);
      dot = lanes_sum<QRows::kPerRow>(dot);
      if (QRows::col() == 0) den[QRows::row(r)] = dot;
      store_vec(p, f);
    }
    __syncthreads();

    // Warp w: query rows 16w to 16w + 15, every column of the output.
    constexpr int kTiles = D / kTile;
    wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc[kTiles];
#pragma unroll
    for (int t = 0; t < kTiles; ++t) wmma::fill_fragment(acc[t], 0.f);
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += kTile) {
      wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, T, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, fq + warp * kTile * ld + k0, ld);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, hc + k0 * ld + t * kTile, ld);
        wmma::mma_sync(acc[t], fa, fb, acc[t]);
      }
    }
    __syncthreads();  // the staging area overlaps the tiles
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
      wmma::store_matrix_sync(stage + warp * kTile * ldf + t * kTile, acc[t], ldf, wmma::mem_row_major);
    __syncthreads();

    // φ > 0, so den is 0 exactly where the complement is empty (Z_c sums no block): nothing to add.
    char* out = out_rows(w);
    for (int idx = threadIdx.x; idx < valid * (D / kVec); idx += kThreads) {
      const int r = idx / (D / kVec), c = idx % (D / kVec) * kVec;
      const float d = den[r];
      if (!(d > 0.f)) continue;
      float f[kVec];
      load_vec(os + r * ld + c, f);
      const float inv = 1.f / d;
#pragma unroll
      for (int e = 0; e < kVec; ++e) f[e] += stage[r * ldf + c + e] * inv;
      store_vec(reinterpret_cast<T*>(out + r * a.out_strides[1]) + c, f);
    }
  }
}

// Row r of the complement's 0/1 map: ones, then zeros at the columns the CSR lists. A warp a
// row; __syncwarp orders the zeros after the ones.
template <typename T>
__global__ void complement_map_kernel(const int32_t* offsets, const int32_t* cols, int64_t rows, int64_t nk, T* map) {
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  T* row = map + r * nk;
  for (int64_t j = lane; j < nk; j += 32) row[j] = from_float<T>(1.f);
  __syncwarp();
  for (int32_t e = offsets[r] + lane; e < offsets[r + 1]; e += 32) row[cols[e]] = from_float<T>(0.f);
}

// One persistent kernel: opts into its shared memory (over 48 KB at D = 128) and launches as many
// CTAs as the device holds at once, but no more than there are items.
template <typename Kernel>
cudaError_t launch(Kernel kernel, int64_t items, const ComplementLinearArgs& a, int smem, cudaStream_t stream) {
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err == cudaSuccess) err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (err != cudaSuccess) return err;
  const int64_t grid = std::min<int64_t>(items, int64_t(sms) * std::max(per_sm, 1));
  kernel<<<unsigned(grid), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

int64_t items(const ComplementLinearArgs& a, int64_t block) {
  return (a.tokens + block - 1) / block * a.heads * a.batch;
}

template <typename T, int D, int KB>
cudaError_t summaries_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  return launch(block_summaries_kernel<T, D, KB>, items(a, KB), a, SummariesSmem<T, D>::kBytes, stream);
}

template <typename T>
cudaError_t summaries_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  if (a.head_dim == 64)
    return a.k_block == 64 ? summaries_for<T, 64, 64>(a, stream) : summaries_for<T, 64, 128>(a, stream);
  return a.k_block == 64 ? summaries_for<T, 128, 64>(a, stream) : summaries_for<T, 128, 128>(a, stream);
}

template <typename T>
cudaError_t combine_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  const int64_t n = items(a, kQueryBlock);
  return a.head_dim == 64 ? launch(linear_combine_kernel<T, 64>, n, a, CombineSmem<T, 64>::kBytes, stream)
                          : launch(linear_combine_kernel<T, 128>, n, a, CombineSmem<T, 128>::kBytes, stream);
}

bool empty(const ComplementLinearArgs& a) { return a.batch == 0 || a.heads == 0 || a.tokens == 0; }

}  // namespace

bool complement_linear_kernels_support(const ComplementLinearArgs& a) {
  return (a.type == ElementType::kF16 || a.type == ElementType::kBF16) && (a.head_dim == 64 || a.head_dim == 128) &&
         (a.k_block == 64 || a.k_block == 128);
}

cudaError_t launch_block_summaries(const ComplementLinearArgs& a, cudaStream_t stream) {
  if (!complement_linear_kernels_support(a)) return cudaErrorInvalidValue;
  if (empty(a)) return cudaSuccess;
  return a.type == ElementType::kBF16 ? summaries_for<__nv_bfloat16>(a, stream) : summaries_for<__half>(a, stream);
}

cudaError_t launch_complement_map(const int32_t* offsets, const int32_t* cols, int64_t rows, int64_t nk,
                                  ElementType type, void* map, cudaStream_t stream) {
  if (type != ElementType::kF16 && type != ElementType::kBF16) return cudaErrorInvalidValue;
  if (rows == 0 || nk == 0) return cudaSuccess;
  const unsigned blocks = unsigned((rows + kWarps - 1) / kWarps);
  if (type == ElementType::kBF16)
    complement_map_kernel<<<blocks, kThreads, 0, stream>>>(offsets, cols, rows, nk, static_cast<__nv_bfloat16*>(map));
  else
    complement_map_kernel<<<blocks, kThreads, 0, stream>>>(offsets, cols, rows, nk, static_cast<__half*>(map));
  return cudaGetLastError();
}

cudaError_t launch_linear_combine(const ComplementLinearArgs& a, cudaStream_t stream) {
  if (!complement_linear_kernels_support(a)) return cudaErrorInvalidValue;
  if (empty(a)) return cudaSuccess;
  return a.type == ElementType::kBF16 ? combine_for<__nv_bfloat16>(a, stream) : combine_for<__half>(a, stream);
}

}  // namespace ditkit::cuda
