// Launcher for the CUDA block-score kernel (ATen-free; block_scores.cpp holds the checks).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/block_pool_cuda.h"  // ElementType

namespace ditkit::cuda {

struct BlockScoresArgs {
  const void* q;  // [B, NQ, H, D] pooled queries, element strides below, stride of D is 1
  const void* k;  // [B, NK, H, D] pooled keys, same element type
  float* out;     // [B, H, NQ, NK] contiguous
  ElementType type;
  int64_t batch, heads, dim, num_q, num_k;
  int64_t q_stride_b, q_stride_n, q_stride_h;
  int64_t k_stride_b, k_stride_n, k_stride_h;
  float scale;
};

cudaError_t launch_block_scores(const BlockScoresArgs& args, cudaStream_t stream);

}  // namespace ditkit::cuda
