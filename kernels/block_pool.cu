#include <cstdint>

#include "kernels/block_pool_cuda.h"
#include "kernels/cuda_elements.cuh"

namespace ditkit::cuda {
namespace {

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

// Fast path when a token's heads are contiguous (the usual [B, S, H, D] layout): a token row is
// H·D contiguous elements. A CTA takes 32 16-byte vectors of the row for one (batch, block); its
// 8 warps each sum every 8th token of the block, so a thread has many independent loads in
// flight, and the warps' partial sums meet in shared memory. A warp reads 512 contiguous bytes.
constexpr int kRowsThreads = 256, kRowsSlices = kRowsThreads / 32;

template <typename T>
__global__ void __launch_bounds__(kRowsThreads) block_mean_pool_rows_kernel(BlockPoolArgs a) {
  constexpr int kVec = kVecElems<T>;
  __shared__ float partial[kRowsSlices][32][kVec + 1];  // +1: the slices' stores do not share banks
  const int64_t nb = (a.tokens + a.block - 1) / a.block;
  const int64_t row = a.heads * a.dim;
  const int64_t chunks = (row + kVec * 32 - 1) / (kVec * 32);
  const int64_t chunk = blockIdx.x % chunks;
  const int64_t j = blockIdx.x / chunks % nb;
  const int64_t b = blockIdx.x / chunks / nb;
  const int lane = threadIdx.x % 32, slice = threadIdx.x / 32;
  const int64_t e = (chunk * 32 + lane) * kVec;
  const int64_t s0 = j * a.block;
  const int64_t s1 = min(s0 + a.block, a.tokens);
  float sum[kVec] = {};
  if (e < row) {
    const T* x = static_cast<const T*>(a.x) + b * a.stride_b + e;
#pragma unroll 8
    for (int64_t s = s0 + slice; s < s1; s += kRowsSlices) {
      float f[kVec];
      load_vec(x + s * a.stride_s, f);
#pragma unroll
      for (int i = 0; i < kVec; ++i) sum[i] += f[i];
    }
  }
#pragma unroll
  for (int i = 0; i < kVec; ++i) partial[slice][lane][i] = sum[i];
  __syncthreads();
  if (slice != 0 || e >= row) return;
  const float inv = 1.0f / static_cast<float>(s1 - s0);
  float mean[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kRowsSlices; ++w) total += partial[w][lane][i];
    mean[i] = total * inv;
  }
  store_vec(static_cast<T*>(a.out) + (b * nb + j) * row + e, mean);
}

template <typename T>
bool rows_path_applies(const BlockPoolArgs& a) {
  constexpr int kVec = kVecElems<T>;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.stride_h == a.dim && (a.heads * a.dim) % kVec == 0 && a.stride_s % kVec == 0 && a.stride_b % kVec == 0 &&
         aligned(a.x) && aligned(a.out);
}

template <typename T>
cudaError_t launch_typed(const BlockPoolArgs& a, int64_t nb, cudaStream_t stream) {
  const bool rows = rows_path_applies<T>(a);
  const int64_t per_block = rows ? (a.heads * a.dim + kVecElems<T> * 32 - 1) / (kVecElems<T> * 32) : a.heads;
  if (a.batch * nb * per_block > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const auto grid = static_cast<unsigned>(a.batch * nb * per_block);
  if (rows) {
    block_mean_pool_rows_kernel<T><<<grid, kRowsThreads, 0, stream>>>(a);
  } else {
    const int threads = a.dim >= 128 ? 128 : 32 * static_cast<int>((a.dim + 31) / 32);
    block_mean_pool_kernel<T><<<grid, threads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_block_mean_pool(const BlockPoolArgs& a, cudaStream_t stream) {
  const int64_t nb = (a.tokens + a.block - 1) / a.block;
  if (a.batch * nb * a.heads == 0 || a.dim == 0) return cudaSuccess;
  switch (a.type) {
    case ElementType::kF32: return launch_typed<float>(a, nb, stream);
    case ElementType::kF16: return launch_typed<__half>(a, nb, stream);
    case ElementType::kBF16: return launch_typed<__nv_bfloat16>(a, nb, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ditkit::cuda
