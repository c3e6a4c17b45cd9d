// Exact softmax attention restricted to the key blocks a BlockCsr lists per query block.
// Non-causal; queries and keys share one token sequence of length S (self-attention).
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/block_csr.h"

namespace ditkit {

struct AttentionOutput {
  at::Tensor out;  // [B, S, H, D], q's dtype; rows with no blocks are zeros
  at::Tensor lse;  // float32 [B, H, S], natural-log sum of exp of the scaled scores; -inf for empty rows
};

struct BlockShape {
  int64_t q_block = 128, k_block = 64;
};

// q, k, v [B, S, H, D] (strided views are fine). scale <= 0 means 1/sqrt(D).
// On Hopper GPUs with bf16/fp16 inputs, head dim 64 or 128, query blocks of 128 and key blocks of
// 64 or 128: the block-sparse flash-attention kernel (block_sparse_attention.cu), which reads only
// the listed key blocks. Elsewhere: dense scores masked by the block map, one head at a time, in
// fp32. Neither synchronises with the host.
AttentionOutput block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockCsr& csr, BlockShape blocks, double scale = 0.0);

// The order the kernel takes a block map's rows in: row indices (int32, on row_offsets' device),
// longest row first, so that short rows fill the tail of the grid; rows of equal length in index
// order (on a GPU, rows of 4,095 blocks or more count as equal).
at::Tensor rows_longest_first(const at::Tensor& row_offsets);

// Whether block_sparse_attention takes the Hopper kernel for these inputs (what tests assert).
bool block_sparse_attention_uses_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        BlockShape blocks);

// block_sparse_attention with SLA's projected linear branch added in the kernel's epilogue: out =
// O_s + (φ(q)H_c)·Wᵀ / (φ(q)·Z_c) per row (nothing where Z_c is 0), φ = softmax over D, from
// `complement_sums` [B, H, NQ, D + 1, D] (per query block the D rows of H_c, then Z_c:
// kernels/complement_linear_attention.h makes them) and `projection` W [D, D], both contiguous in
// q's dtype; lse is O_s's. Only where block_sparse_attention_fuses_linear holds; throws elsewhere.
AttentionOutput block_sparse_attention_with_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const BlockCsr& csr, BlockShape blocks,
                                                   const at::Tensor& complement_sums, const at::Tensor& projection,
                                                   double scale = 0.0);

// Where the kernel runs (block_sparse_attention_uses_kernel) at head dim 128: H_c is read as one
// key tile of 128 rows.
bool block_sparse_attention_fuses_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         BlockShape blocks);

// Every key block for every query block through the same kernel, with no block map to build or
// read: dense attention, where block_sparse_attention_uses_kernel(q, k, v, {128, 128}) holds
// (throws elsewhere). On the H100 it runs ~1.09x faster than cuDNN's fused attention
// (bench/results/kernel-h100.jsonl).
AttentionOutput full_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      double scale = 0.0);

// The same attention in ATen ops that autograd differentiates, for training: SDPA under the block
// map expanded to a token mask [B, H, S, S] (on the GPU the memory-efficient backend, which keeps
// no probabilities). Memory: the bool mask, S² bytes per (batch, head), and the backend's copy of it
// as an additive bias (2·S² bytes in bf16) kept for backward; at the shipped model's 2,048 tokens
// and 4 heads, 48 MiB per clip and layer. Returns `out` only (lse undefined): a loss reads nothing
// else. Rows with no blocks are not defined here (the planners all keep a block in every row).
AttentionOutput block_sparse_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const BlockCsr& csr, BlockShape blocks, double scale = 0.0);

// The oracle: per (batch, head, query block) it gathers exactly the listed key tokens and runs
// softmax attention over them in fp64 on the CPU.
AttentionOutput block_sparse_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const BlockCsr& csr, BlockShape blocks, double scale = 0.0);

}  // namespace ditkit
