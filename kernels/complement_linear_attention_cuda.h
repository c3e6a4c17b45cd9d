// Launchers for the inference kernels of SLA's projected linear branch. Kept free of ATen so nvcc
// compiles the .cu quickly; the ATen-facing checks, the GEMM between the launches and the
// dispatch live in complement_linear_attention.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/block_pool_cuda.h"  // ElementType

namespace ditkit::cuda {

// Query blocks are 128 tokens; key blocks 64 or 128; head dim 64 or 128; fp16 or bf16 (kF16,
// kBF16). Token rows of q, k, v and out are D contiguous elements at 16-byte aligned addresses;
// strides are in bytes (batch, token, head), multiples of 16.
struct ComplementLinearArgs {
  ElementType type;
  int64_t batch, tokens, heads, head_dim, k_block;
  const void* q;
  const void* k;
  const void* v;
  int64_t q_strides[3], k_strides[3], v_strides[3];
  // W [D, D] contiguous, 16-byte aligned; null: the summaries stay unprojected (for a kernel that
  // projects later, block_sparse_attention_with_linear).
  const void* projection;
  // [B, H, NK, D + 1, D] contiguous, written by launch_block_summaries: per key block its D rows
  // of h_j·Wᵀ (h_j without a projection), h_j = φ(K_j)ᵀV_j, then z_j = Σ_t φ(k_t).
  void* summaries;
  // Null, or [B, NK, H, D] contiguous, written by launch_block_summaries_sm90 alone: k's mean over
  // each key block (rows it really has), as block_mean_pool gives it.
  void* k_means;
  // [B, H, NQ, D + 1, D] contiguous, read by launch_linear_combine: per query block H_c, then Z_c.
  const void* complement_sums;
  void* out;  // [B, S, H, D], read and written in place
  int64_t out_strides[3];
};

// Whether the kernels take these shapes and this element type.
bool complement_linear_kernels_support(const ComplementLinearArgs& args);

// One CTA per (key block, head, batch).
cudaError_t launch_block_summaries(const ComplementLinearArgs& args, cudaStream_t stream);

// The same unprojected summaries on Hopper with TMA and wgmma (block_summaries_sm90.cu), where
// block_summaries_sm90_support holds: no projection, head dim 128, the current device sm_90.
bool block_summaries_sm90_support(const ComplementLinearArgs& args);
cudaError_t launch_block_summaries_sm90(const ComplementLinearArgs& args, cudaStream_t stream);

// The complement of a block CSR as the 0/1 map [rows, nk] in `type` (kF16 or kBF16), contiguous:
// row r is 1 except at cols[offsets[r]] to cols[offsets[r + 1] - 1] (int32, each below nk).
cudaError_t launch_complement_map(const int32_t* offsets, const int32_t* cols, int64_t rows, int64_t nk,
                                  ElementType type, void* map, cudaStream_t stream);

// One CTA per (query block, head, batch): out += φ(q)H_c / (φ(q)·Z_c) for each of its rows below
// S whose complement is not empty.
cudaError_t launch_linear_combine(const ComplementLinearArgs& args, cudaStream_t stream);

}  // namespace ditkit::cuda
