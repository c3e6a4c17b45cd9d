// SLA's projected linear branch for inference: two kernels around the 0/1 GEMM that forms the
// complement sums (complement_linear_attention.cpp), and the small one that builds its 0/1 map
// from the block CSR. The two stage their tiles in shared memory,
// compute the feature map φ = softmax over D in fp32 and round it once to the inputs' dtype for
// the tensor cores (wmma 16x16x16, fp32 accumulation). The normalising sums use those same
// rounded features, so numerator and denominator see one φ. The projection is applied to the
// block summaries (h_j·Wᵀ, D x D each), the one place where it costs no pass over the tokens.
#include <cuda_pipeline.h>
#include <mma.h>

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
__device__ __forceinline__ void softmax_features(const uint4 raw, float (&f)[kVecElems<T>]) {
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

// The summaries kernel's shared memory: the block's tiles, which h_j then overwrites; z_j's
// per-warp partial sums, then the warps' staging tiles; W, apart, since it arrives while the
// tiles are in use.
template <typename T, int D, int KB>
struct SummariesSmem {
  static constexpr int kTiles = (2 * KB > D ? 2 * KB : D) * kLd<T, D> * int(sizeof(T));
  static constexpr int kScratch = (D > kTileStage ? D : kTileStage) * kWarps * int(sizeof(float));
  static constexpr int kBytes = kTiles + kScratch + D * kLd<T, D> * int(sizeof(T));
};

// Key block j of (batch b, head h): h_j = φ(K_j)ᵀV_j [D, D] on the tensor cores, rounded to T,
// times Wᵀ in a second pass where a projection is given, and z_j = Σ_t φ(k_t) [D] unprojected
// (den needs no projection), written as the D + 1 rows of its summary. Rows past S are zero features and zero values, so a
// partial block's padding adds nothing.
template <typename T, int D, int KB>
__global__ void __launch_bounds__(kThreads, kMinBlocks) block_summaries_kernel(ComplementLinearArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kVec = kVecElems<T>, ld = kLd<T, D>;
  using Rows = RowVectors<T, D, KB>;
  using Smem = SummariesSmem<T, D, KB>;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  T* fk = reinterpret_cast<T*>(smem);  // [KB, ld]: K_j, then φ(K_j)
  T* vs = fk + KB * ld;                // [KB, ld]: V_j
  T* hs = fk;                          // [D, ld]: h_j, once the tiles are used
  float* zpart = reinterpret_cast<float*>(smem + Smem::kTiles);        // [kWarps, D]: z_j per warp
  float* stage = zpart + warp * kTileStage;                            // the warp's, once zpart is read
  T* ws = reinterpret_cast<T*>(smem + Smem::kTiles + Smem::kScratch);  // [D, ld]: W
  const int64_t j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t first = j * KB;
  const int valid = a.tokens - first < KB ? int(a.tokens - first) : KB;

  // K_j, V_j and W go straight to shared memory, W landing while the first product runs. Each
  // thread then turns the K_j vectors it copied into φ(K_j) in place: no barrier in between.
  Rows::copy_async(fk, ld,
                   static_cast<const char*>(a.k) + b * a.k_strides[0] + first * a.k_strides[1] + h * a.k_strides[2],
                   a.k_strides[1], valid);
  Rows::copy_async(vs, ld,
                   static_cast<const char*>(a.v) + b * a.v_strides[0] + first * a.v_strides[1] + h * a.v_strides[2],
                   a.v_strides[1], valid);
  __pipeline_commit();
  if (a.projection)
    RowVectors<T, D, D>::copy_async(ws, ld, static_cast<const char*>(a.projection), D * int(sizeof(T)), D);
  __pipeline_commit();
  __pipeline_wait_prior(1);  // K_j and V_j
  // This thread's columns are the same in every row it holds: it sums them as it goes.
  float z[kVec] = {};
#pragma unroll
  for (int i = 0; i < Rows::kPerThread; ++i) {
    T* p = fk + Rows::row(i) * ld + Rows::col();
    float f[kVec];
    softmax_features<T, Rows::kPerRow>(*reinterpret_cast<const uint4*>(p), f);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      if (Rows::row(i) >= valid) f[e] = 0.f;
      z[e] += f[e];
    }
    store_vec(p, f);
  }
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
#pragma unroll
    for (int o = Rows::kPerRow; o < 32; o *= 2) z[e] += __shfl_xor_sync(0xffffffffu, z[e], o);
  }
  if (lane < Rows::kPerRow) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) zpart[warp * D + Rows::col() + e] = z[e];
  }
  __syncthreads();

  T* out = static_cast<T*>(a.summaries) + ((b * a.heads + h) * gridDim.x + j) * (D + 1) * D;
  if (threadIdx.x < D) {
    float z_sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) z_sum += zpart[w * D + threadIdx.x];
    out[D * D + threadIdx.x] = from_float<T>(z_sum);
  }
  // h_j's tiles split over the warps as 4 x 2 blocks of tiles (2 x 4 tiles each at D = 128),
  // which load fewer fragments per step than tile rows would. Both passes share the split.
  using Tiles = WarpTiles<D>;
  const int r0 = warp / Tiles::kWarpCols * Tiles::kRows, c0 = warp % Tiles::kWarpCols * Tiles::kCols;
  typename Tiles::Acc acc;
  Tiles::zero(acc);
  // φ(K_j)ᵀ is φ(K_j) read column-major.
  Tiles::template mma<KB, wmma::col_major, wmma::row_major>(acc, fk, vs, ld, r0, c0);
  __syncthreads();  // h_j overwrites the tiles, the staging tiles z's partial sums
  if (!a.projection) {
    Tiles::store_rounded(acc, out, D, r0, c0, stage);
    return;
  }
  Tiles::store_rounded(acc, hs, ld, r0, c0, stage);
  Tiles::zero(acc);
  __pipeline_wait_prior(0);  // W
  __syncthreads();
  // Wᵀ is W read column-major.
  Tiles::template mma<D, wmma::row_major, wmma::col_major>(acc, hs, ws, ld, r0, c0);
  Tiles::store_rounded(acc, out, D, r0, c0, stage);
}

template <typename T, int D>
constexpr int combine_tiles_smem() {
  const int tiles = (kQueryBlock + D) * kLd<T, D> * int(sizeof(T));
  const int stage = kQueryBlock * kLdF<D> * int(sizeof(float));
  return tiles > stage ? tiles : stage;
}
template <typename T, int D>
constexpr int combine_smem() {
  return combine_tiles_smem<T, D>() + (D + kQueryBlock) * int(sizeof(float));
}

// Query block i of (batch b, head h): out rows += φ(Q_i)H_c / (φ(Q_i)·Z_c), the numerator on the
// tensor cores, the denominator per row in fp32. Rows past S are neither read nor written.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, kMinBlocks) linear_combine_kernel(ComplementLinearArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kVec = kVecElems<T>, ld = kLd<T, D>, ldf = kLdF<D>;
  using QRows = RowVectors<T, D, kQueryBlock>;
  T* fq = reinterpret_cast<T*>(smem);                                       // [128, ld]: φ(Q_i)
  T* hc = fq + kQueryBlock * ld;                                            // [D, ld]: H_c
  float* stage = reinterpret_cast<float*>(smem);                            // [128, ldf]: φ(Q_i)H_c
  float* zc = reinterpret_cast<float*>(smem + combine_tiles_smem<T, D>());  // [D]
  float* den = zc + D;                                                      // [128]
  const int64_t i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t first = i * kQueryBlock;
  const int valid = a.tokens - first < kQueryBlock ? int(a.tokens - first) : kQueryBlock;
  const int warp = threadIdx.x / 32;

  const T* sums = static_cast<const T*>(a.complement_sums) + ((b * a.heads + h) * gridDim.x + i) * (D + 1) * D;
  QRows q;
  RowVectors<T, D, D> hv;
  q.load(static_cast<const char*>(a.q) + b * a.q_strides[0] + first * a.q_strides[1] + h * a.q_strides[2],
         a.q_strides[1], valid);
  hv.load(reinterpret_cast<const char*>(sums), D * int(sizeof(T)), D);
  if (threadIdx.x < D) zc[threadIdx.x] = to_float(sums[D * D + threadIdx.x]);
  hv.store(hc, ld);
  __syncthreads();

#pragma unroll
  for (int n = 0; n < QRows::kPerThread; ++n) {
    float f[kVec];
    softmax_features<T, QRows::kPerRow>(q.v[n], f);
    float dot = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; ++e) dot += f[e] * zc[QRows::col() + e];
    dot = lanes_sum<QRows::kPerRow>(dot);
    if (QRows::col() == 0) den[QRows::row(n)] = dot;
    store_vec(fq + QRows::row(n) * ld + QRows::col(), f);
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
  char* out = static_cast<char*>(a.out) + b * a.out_strides[0] + first * a.out_strides[1] + h * a.out_strides[2];
  for (int idx = threadIdx.x; idx < valid * (D / kVec); idx += kThreads) {
    const int r = idx / (D / kVec), c = idx % (D / kVec) * kVec;
    const float d = den[r];
    if (!(d > 0.f)) continue;
    T* o = reinterpret_cast<T*>(out + r * a.out_strides[1]) + c;
    float f[kVec];
    load_vec(o, f);
    const float inv = 1.f / d;
#pragma unroll
    for (int e = 0; e < kVec; ++e) f[e] += stage[r * ldf + c + e] * inv;
    store_vec(o, f);
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

// One kernel instance: opts into its shared memory (over 48 KB at D = 128) and launches.
template <typename Kernel>
cudaError_t launch(Kernel kernel, int64_t blocks, const ComplementLinearArgs& a, int smem, cudaStream_t stream) {
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  kernel<<<dim3(unsigned(blocks), unsigned(a.heads), unsigned(a.batch)), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int D, int KB>
cudaError_t summaries_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  return launch(block_summaries_kernel<T, D, KB>, (a.tokens + KB - 1) / KB, a, SummariesSmem<T, D, KB>::kBytes, stream);
}

template <typename T>
cudaError_t summaries_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  if (a.head_dim == 64)
    return a.k_block == 64 ? summaries_for<T, 64, 64>(a, stream) : summaries_for<T, 64, 128>(a, stream);
  return a.k_block == 64 ? summaries_for<T, 128, 64>(a, stream) : summaries_for<T, 128, 128>(a, stream);
}

template <typename T>
cudaError_t combine_for(const ComplementLinearArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.tokens + kQueryBlock - 1) / kQueryBlock;
  return a.head_dim == 64 ? launch(linear_combine_kernel<T, 64>, blocks, a, combine_smem<T, 64>(), stream)
                          : launch(linear_combine_kernel<T, 128>, blocks, a, combine_smem<T, 128>(), stream);
}

bool empty(const ComplementLinearArgs& a) { return a.batch == 0 || a.heads == 0 || a.tokens == 0; }

}  // namespace

bool complement_linear_kernels_support(const ComplementLinearArgs& a) {
  return (a.type == ElementType::kF16 || a.type == ElementType::kBF16) && (a.head_dim == 64 || a.head_dim == 128) &&
         (a.k_block == 64 || a.k_block == 128) && a.heads < 65536 && a.batch < 65536;  // grid y and z
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
