#include <cstdint>

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

template <typename T>
cudaError_t launch_typed(const BlockScoresArgs& a, cudaStream_t stream) {
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
