// Launcher for the CUDA block mean-pool kernel. Kept free of ATen so nvcc compiles the .cu
// quickly; the ATen-facing checks live in block_pool.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ditkit::cuda {

enum class ElementType { kF32, kF16, kBF16 };

struct BlockPoolArgs {
  const void* x;  // [B, S, H, D] with the given element strides; stride of D is 1
  void* out;      // [B, NB, H, D] contiguous
  ElementType type;
  int64_t batch, tokens, heads, dim;
  int64_t stride_b, stride_s, stride_h;
  int64_t block;
};

cudaError_t launch_block_mean_pool(const BlockPoolArgs& args, cudaStream_t stream);

}  // namespace ditkit::cuda
