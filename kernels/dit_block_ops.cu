// The DiT block's memory-bound steps as one pass each over the token rows: one CTA per row, each
// thread holding up to kMaxVecs 16-byte vectors of it in registers, so a row is read once,
// reduced in fp32 and written once, rounded where the unfused ATen sequence rounds.
#include <cstdint>

#include "kernels/cuda_elements.cuh"
#include "kernels/dit_block_ops_cuda.h"

namespace ditkit::cuda {
namespace {

constexpr int kMaxVecs = kRowVecsPerThread;
constexpr int kMaxThreads = kRowThreadsMax;

// The sum of v over the CTA, returned to every thread. `shared` holds one float per warp.
__device__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // an earlier call's readers are done with `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x >> 5) ? shared[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The vectors thread t owns in a row of C elements: t, t + blockDim, ... (coalesced per step).
template <typename T>
struct RowVecs {
  static constexpr int kVec = kVecElems<T>;
  float f[kMaxVecs][kVec];
  int64_t count;  // vectors in the row

  __device__ explicit RowVecs(int64_t channels) : count(channels / kVec) {}
  __device__ bool has(int i) const { return threadIdx.x + int64_t(i) * blockDim.x < count; }
  __device__ int64_t offset(int i) const { return (threadIdx.x + int64_t(i) * blockDim.x) * kVec; }
};

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) modulated_layer_norm_kernel(ModulatedLayerNormArgs a) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x, C = a.shape.channels;
  const int64_t b = row / a.shape.rows_per_batch;
  const T* x = static_cast<const T*>(a.x) + row * C;
  RowVecs<T> r(C);
  constexpr int kVec = RowVecs<T>::kVec;

  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i)) {
      load_vec(x + r.offset(i), r.f[i]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum += r.f[i][j];
    }
  const float mean = block_sum(sum, shared) / float(C);
  float squares = 0.f;  // two passes over registers: no cancellation from E[x²] - E[x]²
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i))
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float d = r.f[i][j] - mean;
        squares += d * d;
      }
  const float rstd = rsqrtf(block_sum(squares, shared) / float(C) + a.eps);

  const float* scale = a.scale ? a.scale + b * a.modulation_batch_stride : nullptr;
  const float* shift = a.shift ? a.shift + b * a.modulation_batch_stride : nullptr;
  T* out = static_cast<T*>(a.out) + row * C;
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        float v = (r.f[i][j] - mean) * rstd;
        if (a.weight) v = v * a.weight[c0 + j] + a.bias[c0 + j];
        if (scale) v = v * (1.f + scale[c0 + j]) + shift[c0 + j];
        r.f[i][j] = v;
      }
      store_vec(out + c0, r.f[i]);
    }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) gated_residual_kernel(GatedResidualArgs a) {
  const int64_t row = blockIdx.x, C = a.shape.channels;
  const float* gate = a.gate ? a.gate + row / a.shape.rows_per_batch * a.gate_batch_stride : nullptr;
  const T* x = static_cast<const T*>(a.x) + row * C;
  const T* y = static_cast<const T*>(a.y) + row * C;
  T* out = static_cast<T*>(a.out) + row * C;
  RowVecs<T> r(C);
  constexpr int kVec = RowVecs<T>::kVec;
  float yv[kVec];
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
      load_vec(x + c0, r.f[i]);
      load_vec(y + c0, yv);
#pragma unroll
      for (int j = 0; j < kVec; ++j) r.f[i][j] += gate ? yv[j] * gate[c0 + j] : yv[j];
      store_vec(out + c0, r.f[i]);
    }
}

// RMSNorm over the whole row (all heads, Wan's "rms_norm_across_heads"), then the rotation of
// channel pairs (2i, 2i+1) of each head. Rounds as at::rms_norm and diffusers' rotary code do:
// after normalising, after the weight, after the rotation.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads) rms_norm_rope_kernel(RmsNormRopeArgs a) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x, C = a.shape.channels;
  const int64_t s = row % a.shape.rows_per_batch;
  const T* x = static_cast<const T*>(a.x) + row * C;
  const T* weight = static_cast<const T*>(a.weight);
  RowVecs<T> r(C);
  constexpr int kVec = RowVecs<T>::kVec;

  float squares = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i)) {
      load_vec(x + r.offset(i), r.f[i]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) squares += r.f[i][j] * r.f[i][j];
    }
  const float rstd = rsqrtf(block_sum(squares, shared) / float(C) + a.eps);

  const int64_t half = a.head_dim / 2;
  T* out = static_cast<T*>(a.out) + row * C;
#pragma unroll
  for (int i = 0; i < kMaxVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float normed = to_float(from_float<T>(r.f[i][j] * rstd));
        r.f[i][j] = to_float(from_float<T>(normed * to_float(weight[c0 + j])));
      }
      if (a.cos) {
        // Pairs start at even channels and head_dim is even: a pair never straddles a vector or a head.
        const float* cos = a.cos + s * half;
        const float* sin = a.sin + s * half;
#pragma unroll
        for (int j = 0; j < kVec; j += 2) {
          const int64_t p = (c0 + j) % a.head_dim / 2;
          const float x1 = r.f[i][j], x2 = r.f[i][j + 1];
          r.f[i][j] = x1 * cos[p] - x2 * sin[p];
          r.f[i][j + 1] = x1 * sin[p] + x2 * cos[p];
        }
      }
      store_vec(out + c0, r.f[i]);
    }
}

// Threads per CTA: enough 32-thread warps that kMaxVecs vectors each cover the row.
template <typename T>
int threads_for(int64_t channels) {
  const int64_t vecs = channels / kVecElems<T>;
  int64_t threads = (vecs + kMaxVecs - 1) / kMaxVecs;
  threads = (threads + 31) / 32 * 32;
  return int(threads < 32 ? 32 : threads);
}

template <typename Args>
cudaError_t launch_rows(const Args& a, cudaStream_t stream, void (*f32)(Args), void (*f16)(Args),
                        void (*bf16)(Args)) {
  if (a.shape.rows == 0 || a.shape.channels == 0) return cudaSuccess;
  if (a.shape.rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  int threads = 0;
  void (*kernel)(Args) = nullptr;
  switch (a.type) {
    case ElementType::kF32: threads = threads_for<float>(a.shape.channels), kernel = f32; break;
    case ElementType::kF16: threads = threads_for<__half>(a.shape.channels), kernel = f16; break;
    case ElementType::kBF16: threads = threads_for<__nv_bfloat16>(a.shape.channels), kernel = bf16; break;
  }
  if (threads > kMaxThreads) return cudaErrorInvalidConfiguration;
  kernel<<<unsigned(a.shape.rows), threads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_modulated_layer_norm(const ModulatedLayerNormArgs& a, cudaStream_t stream) {
  return launch_rows(a, stream, modulated_layer_norm_kernel<float>, modulated_layer_norm_kernel<__half>,
                              modulated_layer_norm_kernel<__nv_bfloat16>);
}

cudaError_t launch_gated_residual(const GatedResidualArgs& a, cudaStream_t stream) {
  return launch_rows(a, stream, gated_residual_kernel<float>, gated_residual_kernel<__half>,
                              gated_residual_kernel<__nv_bfloat16>);
}

cudaError_t launch_rms_norm_rope(const RmsNormRopeArgs& a, cudaStream_t stream) {
  return launch_rows(a, stream, rms_norm_rope_kernel<float>, rms_norm_rope_kernel<__half>,
                              rms_norm_rope_kernel<__nv_bfloat16>);
}

}  // namespace ditkit::cuda
