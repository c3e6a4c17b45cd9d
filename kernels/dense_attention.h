// Full (non-causal) softmax attention: the baseline every sparse method is measured against and
// the `dense` method's run().
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/block_sparse_attention.h"

namespace ditkit {

// Which implementation dense_attention() takes for these tensors:
//   "cudnn"      CUDA, fp16/bf16, head dim a multiple of 8 and <= 128 (cuDNN's fused SDPA, forced)
//   "efficient"  other CUDA cases (fp32, other head dims): PyTorch's memory-efficient kernel
//                (head dims that are not a multiple of 8 are zero-padded to one, exactly)
//   "cpu-flash"  the CPU: PyTorch's flash attention for CPU
const char* dense_attention_backend(const at::Tensor& q);

// q, k, v [B, S, H, D] (strided views, no copies forced) -> out [B, S, H, D] and lse [B, H, S].
// scale <= 0 means 1/sqrt(D).
AttentionOutput dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale = 0.0);

}  // namespace ditkit
