#include <cuda_pipeline.h>

#include <cstdint>
#include <type_traits>

#include "kernels/block_scores_cuda.h"
#include "kernels/cuda_elements.cuh"

namespace ditkit::cuda {
namespace {

// A register-blocked GEMM per (batch, head): a CTA computes 64x64 scores, each thread a 4x4
// patch, over the head dim in chunks of 32. The chunks sit in shared memory with the head dim
// outermost, so a thread reads its 4 pooled queries and 4 pooled keys as two float4s and does 16
// FMAs with them. Tails (query, key or head dim) are zero-filled and never stored.
constexpr int kTile = 64, kChunk = 32, kThreads = 256, kPatch = 4, kPitch = kTile + 4;

// Rows first .. first+kTile-1 of x (rows `stride_n` apart), head dims d0 .. d0+kChunk-1, as floats
// in tile[d][row]. A warp takes 8 head dims of 4 rows: its stores land in 32 different banks
// (the pitch moves a head dim by 4 banks), and its loads are 16 contiguous bytes a row at 16 bits.
template <typename T>
__device__ void load_chunk(const T* x, int64_t stride_n, int64_t first, int64_t count, int64_t d0, int64_t dim,
                           float (*tile)[kPitch]) {
  for (int e = threadIdx.x; e < kTile * kChunk; e += kThreads) {
    const int warp = e / 32, lane = e % 32;
    const int d = lane % 8 + 8 * (warp % (kChunk / 8)), r = lane / 8 + 4 * (warp / (kChunk / 8));
    const bool inside = first + r < count && d0 + d < dim;
    tile[d][r] = inside ? to_float(x[(first + r) * stride_n + d0 + d]) : 0.f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) block_scores_kernel(BlockScoresArgs a) {
  __shared__ alignas(16) float q_tile[kChunk][kPitch];
  __shared__ alignas(16) float k_tile[kChunk][kPitch];
  const int64_t q_tiles = (a.num_q + kTile - 1) / kTile, k_tiles = (a.num_k + kTile - 1) / kTile;
  const int64_t i0 = blockIdx.x % q_tiles * kTile, j0 = blockIdx.x / q_tiles % k_tiles * kTile;
  const int64_t bh = blockIdx.x / q_tiles / k_tiles, b = bh / a.heads, h = bh % a.heads;
  const T* q = static_cast<const T*>(a.q) + b * a.q_stride_b + h * a.q_stride_h;
  const T* k = static_cast<const T*>(a.k) + b * a.k_stride_b + h * a.k_stride_h;
  const int ty = threadIdx.x / (kTile / kPatch), tx = threadIdx.x % (kTile / kPatch);
  float acc[kPatch][kPatch] = {};
  for (int64_t d0 = 0; d0 < a.dim; d0 += kChunk) {
    __syncthreads();  // the last chunk is consumed
    load_chunk(q, a.q_stride_n, i0, a.num_q, d0, a.dim, q_tile);
    load_chunk(k, a.k_stride_n, j0, a.num_k, d0, a.dim, k_tile);
    __syncthreads();
#pragma unroll 8
    for (int d = 0; d < kChunk; ++d) {
      const float4 qv = *reinterpret_cast<const float4*>(&q_tile[d][ty * kPatch]);
      const float4 kv = *reinterpret_cast<const float4*>(&k_tile[d][tx * kPatch]);
      const float qs[kPatch] = {qv.x, qv.y, qv.z, qv.w}, ks[kPatch] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
      for (int u = 0; u < kPatch; ++u)
#pragma unroll
        for (int w = 0; w < kPatch; ++w) acc[u][w] += qs[u] * ks[w];
    }
  }
  float* out = a.out + bh * a.num_q * a.num_k;
#pragma unroll
  for (int u = 0; u < kPatch; ++u) {
    const int64_t i = i0 + ty * kPatch + u;
#pragma unroll
    for (int w = 0; w < kPatch; ++w) {
      const int64_t j = j0 + tx * kPatch + w;
      if (i < a.num_q && j < a.num_k) out[i * a.num_k + j] = acc[u][w] * a.scale;
    }
  }
}

// The tensor-core path (f16/bf16 inputs, head dim a multiple of 16 up to 128, 16-byte aligned
// rows): a CTA computes 32 pooled queries against 128 pooled keys with mma.sync m16n8k16 (products
// exact in fp32, fp32 sums). Both tiles arrive by cp.async, every load in flight at once (the
// register-blocked kernel above waits on each of its scalar loads in turn, which is what its time
// went to), in rows padded by 16 bytes so that a warp's fragment loads hit 32 different banks.
// Warp w takes query rows 16·(w / 4) .. +16 against keys 32·(w % 4) .. +32. Rows past NQ or NK
// are zero-filled and never stored.
constexpr int kMmaRows = 32, kMmaCols = 128, kMmaThreads = 256, kMmaMaxDim = 128;

template <typename T> __device__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ void mma_16x8x16<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ void mma_16x8x16<__half>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T>
__global__ void __launch_bounds__(kMmaThreads) block_scores_mma_kernel(BlockScoresArgs a) {
  constexpr int kVec = kVecElems<T>;
  __shared__ alignas(16) T tile[(kMmaRows + kMmaCols) * (kMmaMaxDim + kVec)];
  const int pitch = static_cast<int>(a.dim) + kVec;  // elements; 16 bytes past a multiple of 128
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kMmaRows, j0 = static_cast<int64_t>(blockIdx.y) * kMmaCols;
  const int64_t b = blockIdx.z / a.heads, h = blockIdx.z % a.heads;
  const T* q = static_cast<const T*>(a.q) + b * a.q_stride_b + h * a.q_stride_h;
  const T* k = static_cast<const T*>(a.k) + b * a.k_stride_b + h * a.k_stride_h;

  // Tile rows 0..31 are the queries, 32..159 the keys.
  const int vecs = static_cast<int>(a.dim) / kVec;
  for (int e = threadIdx.x; e < (kMmaRows + kMmaCols) * vecs; e += kMmaThreads) {
    const int row = e / vecs, col = e % vecs * kVec;
    const bool is_q = row < kMmaRows;
    const int64_t n = is_q ? i0 + row : j0 + row - kMmaRows;
    T* dst = tile + row * pitch + col;
    if (n < (is_q ? a.num_q : a.num_k))
      __pipeline_memcpy_async(dst, (is_q ? q + n * a.q_stride_n : k + n * a.k_stride_n) + col, 16);
    else
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();

  // Fragments (PTX ISA, mma.m16n8k16): lane l holds rows l/4 and l/4 + 8, column pairs 2·(l%4)
  // and 2·(l%4) + 8 of A; key l/4 of each 8-key tile, the same head-dim pairs, of B.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c2 = lane % 4 * 2;
  const T* qrow = tile + (warp / 4 * 16 + g) * pitch + c2;
  const T* krow = tile + (kMmaRows + warp % 4 * 32 + g) * pitch + c2;
  const auto pair = [](const T* p) { return *reinterpret_cast<const uint32_t*>(p); };
  float acc[4][4] = {};
  for (int d = 0; d < vecs * kVec; d += 16) {
    const uint32_t fa[4] = {pair(qrow + d), pair(qrow + 8 * pitch + d), pair(qrow + d + 8),
                            pair(qrow + 8 * pitch + d + 8)};
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const T* kt = krow + t * 8 * pitch + d;
      const uint32_t fb[2] = {pair(kt), pair(kt + 8)};
      mma_16x8x16<T>(acc[t], fa, fb);
    }
  }

  float* out = a.out + static_cast<int64_t>(blockIdx.z) * a.num_q * a.num_k;
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const int64_t j = j0 + warp % 4 * 32 + t * 8 + c2;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t i = i0 + warp / 4 * 16 + g + 8 * half;
      if (i >= a.num_q) continue;
      if (j < a.num_k) out[i * a.num_k + j] = acc[t][2 * half] * a.scale;
      if (j + 1 < a.num_k) out[i * a.num_k + j + 1] = acc[t][2 * half + 1] * a.scale;
    }
  }
}

template <typename T>
bool mma_path_applies(const BlockScoresArgs& a) {
  constexpr int kVec = kVecElems<T>;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool strides = a.q_stride_b % kVec == 0 && a.q_stride_n % kVec == 0 && a.q_stride_h % kVec == 0 &&
                       a.k_stride_b % kVec == 0 && a.k_stride_n % kVec == 0 && a.k_stride_h % kVec == 0;
  return a.dim % 16 == 0 && a.dim <= kMmaMaxDim && strides && aligned(a.q) && aligned(a.k) &&
         (a.num_k + kMmaCols - 1) / kMmaCols <= 65535 && a.batch * a.heads <= 65535 &&
         (a.num_q + kMmaRows - 1) / kMmaRows <= 0x7fffffff;
}

template <typename T>
cudaError_t launch_typed(const BlockScoresArgs& a, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (mma_path_applies<T>(a)) {
      const dim3 grid(static_cast<unsigned>((a.num_q + kMmaRows - 1) / kMmaRows),
                      static_cast<unsigned>((a.num_k + kMmaCols - 1) / kMmaCols),
                      static_cast<unsigned>(a.batch * a.heads));
      block_scores_mma_kernel<T><<<grid, kMmaThreads, 0, stream>>>(a);
      return cudaGetLastError();
    }
  }
  const int64_t ctas = a.batch * a.heads * ((a.num_q + kTile - 1) / kTile) * ((a.num_k + kTile - 1) / kTile);
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  block_scores_kernel<T><<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_block_scores(const BlockScoresArgs& a, cudaStream_t stream) {
  if (a.batch * a.heads * a.num_q * a.num_k == 0) return cudaSuccess;
  switch (a.type) {
    case ElementType::kF32: return launch_typed<float>(a, stream);
    case ElementType::kF16: return launch_typed<__half>(a, stream);
    case ElementType::kBF16: return launch_typed<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ditkit::cuda
