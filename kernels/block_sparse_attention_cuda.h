// Launcher for the Hopper block-sparse flash-attention kernel (ATen-free; block_sparse_attention.cpp
// holds the checks and the fallback). One CTA per 128-query block, longest rows first: a
// producer warpgroup loads Q and exactly the listed K/V blocks with TMA, two consumer warpgroups
// (64 query rows each) run wgmma with an online softmax. Key tiles are 128 tokens: one CSR block
// of 128, or two of 64.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ditkit::cuda {

enum class AttentionDtype { kBFloat16, kFloat16 };

struct BlockSparseAttentionArgs {
  AttentionDtype dtype;
  const void *q, *k, *v;  // [B, S, H, D] with D contiguous; strides in elements
  void* out;              // [B, S, H, D], same dtype
  float* lse;             // [B, H, S] contiguous; -inf for rows with no blocks
  int64_t q_strides[3], k_strides[3], v_strides[3], out_strides[3];  // (batch, token, head)
  int64_t batch, tokens, heads, head_dim;
  int64_t k_block;                // 64 or 128 tokens per CSR key block (query blocks are 128)
  const int32_t* row_offsets;     // [R + 1], R = B·H·NQ rows in (b, h, i) order; null: all blocks
  const int32_t* col_indices;     // ascending key blocks per row
  const int32_t* row_order;       // [R] the order CTAs take rows in: longest first; null: index order
  float scale;                    // softmax scale applied to q·k
  // Null, or SLA's complement sums [B, H, NQ, D + 1, D] in the inputs' dtype (per CSR row: the D
  // rows of H_c, then Z_c) and its projection W [D, D], both contiguous: the kernel adds
  // (φ(q)H_c)·Wᵀ / (φ(q)·Z_c) to each output row. Head dim 128 only.
  const void* complement_sums;
  const void* projection;
};

// True when this build has the kernel and the current device can run it (sm_90).
bool block_sparse_attention_kernel_available();

// Shapes the kernel takes: head_dim 64 or 128 (128 with complement sums), k_block 64 or 128,
// aligned 16-byte rows.
bool block_sparse_attention_kernel_supports(const BlockSparseAttentionArgs& args);

cudaError_t launch_block_sparse_attention(const BlockSparseAttentionArgs& args, cudaStream_t stream);

// order[0..rows) = the rows of row_offsets ([rows + 1]), longest first, equal lengths (4,095
// blocks or more count as equal) in index order: BlockSparseAttentionArgs::row_order.
cudaError_t launch_longest_first_order(const int32_t* row_offsets, int64_t rows, int32_t* order, cudaStream_t stream);

}  // namespace ditkit::cuda
