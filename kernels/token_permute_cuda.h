// Launcher for the CUDA token permutation. Kept free of ATen so nvcc compiles the .cu quickly;
// the ATen-facing checks live in token_permute.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ditkit::cuda {

struct TokenPermuteArgs {
  const void* x;         // [B, S, H, D], strides in bytes, each row of D elements contiguous
  void* out;             // [B, S, H, D] contiguous
  const int64_t* perm;   // [S] or [H, S]
  bool per_head;         // perm is [H, S]
  int64_t batch, tokens, heads;
  int64_t row_bytes;     // D · element size, a multiple of 16
  int64_t stride_b, stride_s, stride_h;  // bytes, multiples of 16
};

// out[b, i, h] = x[b, perm[h][i] (or perm[i]), h], one 16-byte vector per thread.
cudaError_t launch_token_permute(const TokenPermuteArgs& args, cudaStream_t stream);

}  // namespace ditkit::cuda
