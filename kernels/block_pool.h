// Block mean-pooling of token sequences: the first step of every block-score planner
// (top-k, SLA, draft attention pool q and k per block before scoring blocks).
#pragma once

#include <ATen/core/Tensor.h>

namespace ditkit {

// x [B, S, H, D] (any strides; D should be the innermost for speed) -> [B, ceil(S/block), H, D],
// the mean over each run of `block` consecutive tokens. The partial last block is averaged over
// the tokens it really has, so no padding enters the mean. Accumulates in fp32; the result has
// x's dtype. Runs on x's device (CUDA kernel on the GPU, the reference on the CPU).
at::Tensor block_mean_pool(const at::Tensor& x, int64_t block);

// The oracle: plain ATen on the CPU, accumulating in fp64.
at::Tensor block_mean_pool_reference(const at::Tensor& x, int64_t block);

}  // namespace ditkit
