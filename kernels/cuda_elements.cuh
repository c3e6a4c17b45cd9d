// Element conversions and 16-byte vector access shared by the .cu files: kernels compute in
// fp32 and round once when they store.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace ditkit::cuda {

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// Elements of T in one 16-byte vector.
template <typename T> constexpr int kVecElems = 16 / sizeof(T);

// The kVecElems<T> elements of a 16-byte vector already loaded, as floats. `raw` is a copy: given
// a reference into memory, nvcc reads the elements one by one (eight 16-bit loads, not one of 16
// bytes).
template <typename T>
__device__ inline void unpack_vec(const uint4 raw, float (&f)[kVecElems<T>]) {
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVecElems<T>; ++i) f[i] = to_float(v[i]);
}

// Loads kVecElems<T> elements at p (16-byte aligned) as floats.
template <typename T>
__device__ inline void load_vec(const T* p, float (&f)[kVecElems<T>]) {
  unpack_vec<T>(*reinterpret_cast<const uint4*>(p), f);
}

// Rounds f to T and stores the vector at p (16-byte aligned).
template <typename T>
__device__ inline void store_vec(T* p, const float (&f)[kVecElems<T>]) {
  alignas(16) T v[kVecElems<T>];
#pragma unroll
  for (int i = 0; i < kVecElems<T>; ++i) v[i] = from_float<T>(f[i]);
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(v);
}

}  // namespace ditkit::cuda
