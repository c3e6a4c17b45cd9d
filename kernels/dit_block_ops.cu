// The DiT block's memory-bound steps as one pass each over the token rows: a team of threads per
// row holds the row in registers (a warp per row when it fits in up to 8 vectors a lane, else the
// whole CTA), so a row is read once, reduced in fp32 and written once, rounded where the unfused
// ATen sequence rounds.
#include <cstdint>

#include "kernels/cuda_elements.cuh"
#include "kernels/dit_block_ops_cuda.h"

namespace ditkit::cuda {
namespace {

constexpr int kMaxThreads = kRowThreadsMax;
constexpr int kWarpRowsPerCta = 4;
constexpr int kMaxWarpVecs = 8;  // vectors a lane holds in warp-per-row mode

// The threads working on one row: a warp (kWarpRow) or the whole CTA. Each owns the row's 16-byte
// vectors t, t + n, t + 2n, ... (coalesced at every step) and up to kVecs of them.
template <typename T, bool kWarpRow, int kVecs>
struct RowTeam {
  static constexpr int kVec = kVecElems<T>;
  int64_t row;
  int t, n;
  int64_t vectors;  // in the row
  float f[kVecs][kVec];

  __device__ RowTeam(int64_t channels) : vectors(channels / kVec) {
    if constexpr (kWarpRow) {
      row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
      t = threadIdx.x & 31;
      n = 32;
    } else {
      row = blockIdx.x;
      t = threadIdx.x;
      n = blockDim.x;
    }
  }
  __device__ bool has(int i) const { return t + int64_t(i) * n < vectors; }
  __device__ int64_t offset(int i) const { return (t + int64_t(i) * n) * kVec; }

  // The sum of v over the team, returned to every member. `shared` holds one float per warp.
  __device__ float sum(float v, float* shared) const {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if constexpr (kWarpRow) return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // an earlier call's readers are done with `shared`
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < int(blockDim.x >> 5) ? shared[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
};

// kN consecutive fp32 values at p: float4 reads when kN is a multiple of 4 (p 16-byte aligned),
// else float2 reads (kN even, p 8-byte aligned).
template <int kN>
__device__ inline void load_floats(const float* p, float (&f)[kN]) {
  if constexpr (kN % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + i);
      f[i] = v.x, f[i + 1] = v.y, f[i + 2] = v.z, f[i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; i += 2) {
      const float2 v = *reinterpret_cast<const float2*>(p + i);
      f[i] = v.x, f[i + 1] = v.y;
    }
  }
}

template <typename T, bool kWarpRow, int kVecs>
__global__ void __launch_bounds__(kWarpRow ? 32 * kWarpRowsPerCta : kMaxThreads) modulated_layer_norm_kernel(ModulatedLayerNormArgs a) {
  __shared__ float shared[32];
  RowTeam<T, kWarpRow, kVecs> r(a.shape.channels);
  constexpr int kVec = RowTeam<T, kWarpRow, kVecs>::kVec;
  if (r.row >= a.shape.rows) return;  // only warp teams get here; they never sync the CTA
  const int64_t C = a.shape.channels;
  const T* x = static_cast<const T*>(a.x) + r.row * C;

  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i)) {
      load_vec(x + r.offset(i), r.f[i]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum += r.f[i][j];
    }
  const float mean = r.sum(sum, shared) / float(C);
  float squares = 0.f;  // two passes over registers: no cancellation from E[x²] - E[x]²
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i))
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float d = r.f[i][j] - mean;
        squares += d * d;
      }
  const float rstd = rsqrtf(r.sum(squares, shared) / float(C) + a.eps);

  const int64_t b = r.row / a.shape.rows_per_batch;
  const float* scale = a.scale ? a.scale + b * a.modulation_batch_stride : nullptr;
  const float* shift = a.shift ? a.shift + b * a.modulation_batch_stride : nullptr;
  T* out = static_cast<T*>(a.out) + r.row * C;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
      float w[kVec], bias[kVec], sc[kVec], sh[kVec];
      if (a.weight) load_floats(a.weight + c0, w), load_floats(a.bias + c0, bias);
      if (scale) load_floats(scale + c0, sc), load_floats(shift + c0, sh);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        float v = (r.f[i][j] - mean) * rstd;
        if (a.weight) v = v * w[j] + bias[j];
        if (scale) v = v * (1.f + sc[j]) + sh[j];
        r.f[i][j] = v;
      }
      store_vec(out + c0, r.f[i]);
    }
}

template <typename T, bool kWarpRow, int kVecs>
__global__ void __launch_bounds__(kWarpRow ? 32 * kWarpRowsPerCta : kMaxThreads) gated_residual_kernel(GatedResidualArgs a) {
  RowTeam<T, kWarpRow, kVecs> r(a.shape.channels);
  constexpr int kVec = RowTeam<T, kWarpRow, kVecs>::kVec;
  if (r.row >= a.shape.rows) return;
  const int64_t C = a.shape.channels;
  const float* gate = a.gate ? a.gate + r.row / a.shape.rows_per_batch * a.gate_batch_stride : nullptr;
  const T* x = static_cast<const T*>(a.x) + r.row * C;
  const T* y = static_cast<const T*>(a.y) + r.row * C;
  T* out = static_cast<T*>(a.out) + r.row * C;
  float yv[kVec], g[kVec];
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
      load_vec(x + c0, r.f[i]);
      load_vec(y + c0, yv);
      if (gate) load_floats(gate + c0, g);
#pragma unroll
      for (int j = 0; j < kVec; ++j) r.f[i][j] += gate ? yv[j] * g[j] : yv[j];
      store_vec(out + c0, r.f[i]);
    }
}

// RMSNorm over the whole row (all heads, Wan's "rms_norm_across_heads"), then the rotation of
// channel pairs (2i, 2i+1) of each head. Rounds as at::rms_norm and diffusers' rotary code do:
// after normalising, after the weight, after the rotation.
template <typename T, bool kWarpRow, int kVecs>
__global__ void __launch_bounds__(kWarpRow ? 32 * kWarpRowsPerCta : kMaxThreads) rms_norm_rope_kernel(RmsNormRopeArgs a) {
  __shared__ float shared[32];
  RowTeam<T, kWarpRow, kVecs> r(a.shape.channels);
  constexpr int kVec = RowTeam<T, kWarpRow, kVecs>::kVec;
  if (r.row >= a.shape.rows) return;
  const int64_t C = a.shape.channels;
  const int64_t s = r.row % a.shape.rows_per_batch;
  const T* x = static_cast<const T*>(a.x) + r.row * C;
  const T* weight = static_cast<const T*>(a.weight);

  float squares = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i)) {
      load_vec(x + r.offset(i), r.f[i]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) squares += r.f[i][j] * r.f[i][j];
    }
  const float rstd = rsqrtf(r.sum(squares, shared) / float(C) + a.eps);

  const int64_t half = a.head_dim / 2;
  T* out = static_cast<T*>(a.out) + r.row * C;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (r.has(i)) {
      const int64_t c0 = r.offset(i);
      float w[kVec];
      load_vec(weight + c0, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float normed = to_float(from_float<T>(r.f[i][j] * rstd));
        r.f[i][j] = to_float(from_float<T>(normed * w[j]));
      }
      if (a.cos) {
        // head_dim is a multiple of kVec (the dispatch checks), so a vector's kVec / 2 pairs lie
        // in one head and their angles are consecutive in the table.
        const int64_t p0 = s * half + c0 % a.head_dim / 2;
        float cos[kVec / 2], sin[kVec / 2];
        load_floats(a.cos + p0, cos);
        load_floats(a.sin + p0, sin);
#pragma unroll
        for (int j = 0; j < kVec; j += 2) {
          const float x1 = r.f[i][j], x2 = r.f[i][j + 1];
          r.f[i][j] = x1 * cos[j / 2] - x2 * sin[j / 2];
          r.f[i][j + 1] = x1 * sin[j / 2] + x2 * cos[j / 2];
        }
      }
      store_vec(out + c0, r.f[i]);
    }
}

// Picks the team and the registers per thread for rows of `vectors` 16-byte vectors and launches
// Kernel<T, warp?, vecs>: a warp per row (kWarpRowsPerCta rows a CTA) when a lane needs at most
// kMaxWarpVecs vectors, else a CTA per row with up to kRowVecsPerThread vectors a thread.
template <typename T, template <typename, bool, int> class Kernel, typename Args>
cudaError_t launch_typed(const Args& a, cudaStream_t stream) {
  const int64_t vectors = a.shape.channels / kVecElems<T>;
  const int64_t lane_vecs = (vectors + 31) / 32;
  const unsigned warp_ctas = unsigned((a.shape.rows + kWarpRowsPerCta - 1) / kWarpRowsPerCta);
  const dim3 warp_threads(32 * kWarpRowsPerCta);
  if (lane_vecs <= 1) Kernel<T, true, 1>::launch(warp_ctas, warp_threads, stream, a);
  else if (lane_vecs <= 2) Kernel<T, true, 2>::launch(warp_ctas, warp_threads, stream, a);
  else if (lane_vecs <= 4) Kernel<T, true, 4>::launch(warp_ctas, warp_threads, stream, a);
  else if (lane_vecs <= kMaxWarpVecs) Kernel<T, true, kMaxWarpVecs>::launch(warp_ctas, warp_threads, stream, a);
  else {
    int64_t threads = (vectors + kRowVecsPerThread - 1) / kRowVecsPerThread;
    threads = (threads + 31) / 32 * 32;
    if (threads > kMaxThreads) return cudaErrorInvalidConfiguration;
    Kernel<T, false, kRowVecsPerThread>::launch(unsigned(a.shape.rows), dim3(unsigned(threads)), stream, a);
  }
  return cudaGetLastError();
}

template <template <typename, bool, int> class Kernel, typename Args>
cudaError_t launch_rows(const Args& a, ElementType type, cudaStream_t stream) {
  if (a.shape.rows == 0 || a.shape.channels == 0) return cudaSuccess;
  if (a.shape.rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  switch (type) {
    case ElementType::kF32: return launch_typed<float, Kernel>(a, stream);
    case ElementType::kF16: return launch_typed<__half, Kernel>(a, stream);
    case ElementType::kBF16: return launch_typed<__nv_bfloat16, Kernel>(a, stream);
  }
  return cudaErrorInvalidValue;
}

// Kernel templates as types, so launch_typed can pick their parameters.
template <typename T, bool W, int V>
struct ModulatedLayerNorm {
  static void launch(unsigned ctas, dim3 threads, cudaStream_t s, const ModulatedLayerNormArgs& a) {
    modulated_layer_norm_kernel<T, W, V><<<ctas, threads, 0, s>>>(a);
  }
};
template <typename T, bool W, int V>
struct GatedResidual {
  static void launch(unsigned ctas, dim3 threads, cudaStream_t s, const GatedResidualArgs& a) {
    gated_residual_kernel<T, W, V><<<ctas, threads, 0, s>>>(a);
  }
};
template <typename T, bool W, int V>
struct RmsNormRope {
  static void launch(unsigned ctas, dim3 threads, cudaStream_t s, const RmsNormRopeArgs& a) {
    rms_norm_rope_kernel<T, W, V><<<ctas, threads, 0, s>>>(a);
  }
};

}  // namespace

cudaError_t launch_modulated_layer_norm(const ModulatedLayerNormArgs& a, cudaStream_t stream) {
  return launch_rows<ModulatedLayerNorm>(a, a.type, stream);
}

cudaError_t launch_gated_residual(const GatedResidualArgs& a, cudaStream_t stream) {
  return launch_rows<GatedResidual>(a, a.type, stream);
}

cudaError_t launch_rms_norm_rope(const RmsNormRopeArgs& a, cudaStream_t stream) {
  return launch_rows<RmsNormRope>(a, a.type, stream);
}

}  // namespace ditkit::cuda
