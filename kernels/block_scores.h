// Block score GEMM: how strongly each query block attends to each key block, estimated from the
// block means (q̄_i · k̄_j · scale). The planners rank or threshold these scores.
#pragma once

#include <ATen/core/Tensor.h>

namespace ditkit {

// q_pooled [B, NQ, H, D], k_pooled [B, NK, H, D] (from block_mean_pool) -> float32 [B, H, NQ, NK].
// On a GPU (f32, f16 or bf16, both alike) one kernel reads the pooled tensors where
// they are; otherwise one batched GEMM on the tensors' device.
at::Tensor block_scores(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale);

// The oracle: fp64 on the CPU.
at::Tensor block_scores_reference(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale);

}  // namespace ditkit
