#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/block_pool_cuda.h"

namespace ditkit::cuda {
namespace {

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// One CTA per (batch, block, head); threads stride over D, so each token's row is read coalesced.
template <typename T>
__global__ void block_mean_pool_kernel(BlockPoolArgs a) {
  const int64_t nb = (a.tokens + a.block - 1) / a.block;
  const int64_t h = blockIdx.x % a.heads;
  const int64_t j = blockIdx.x / a.heads % nb;
  const int64_t b = blockIdx.x / a.heads / nb;
  const int64_t s0 = j * a.block;
  const int64_t s1 = min(s0 + a.block, a.tokens);
  const float inv = 1.0f / static_cast<float>(s1 - s0);
  const T* x = static_cast<const T*>(a.x) + b * a.stride_b + h * a.stride_h;
  T* out = static_cast<T*>(a.out) + ((b * nb + j) * a.heads + h) * a.dim;
  for (int64_t d = threadIdx.x; d < a.dim; d += blockDim.x) {
    float sum = 0.f;
    for (int64_t s = s0; s < s1; ++s) sum += to_float(x[s * a.stride_s + d]);
    out[d] = from_float<T>(sum * inv);
  }
}

}  // namespace

cudaError_t launch_block_mean_pool(const BlockPoolArgs& a, cudaStream_t stream) {
  const int64_t nb = (a.tokens + a.block - 1) / a.block;
  const int64_t ctas = a.batch * nb * a.heads;
  if (ctas == 0 || a.dim == 0) return cudaSuccess;
  if (ctas > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const int threads = a.dim >= 128 ? 128 : 32 * static_cast<int>((a.dim + 31) / 32);
  switch (a.type) {
    case ElementType::kF32: block_mean_pool_kernel<float><<<ctas, threads, 0, stream>>>(a); break;
    case ElementType::kF16: block_mean_pool_kernel<__half><<<ctas, threads, 0, stream>>>(a); break;
    case ElementType::kBF16: block_mean_pool_kernel<__nv_bfloat16><<<ctas, threads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

}  // namespace ditkit::cuda
