// Choosing key blocks per query block from block scores: top-k, or the fewest blocks that reach
// a share of the (estimated) softmax mass, plus blocks that are always kept.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels/block_csr.h"

namespace ditkit {

struct BlockSelection {
  int64_t top_k = 0;           // > 0: keep exactly min(top_k, NK) blocks per row
  double mass = 0.0;           // used when top_k == 0: keep the fewest blocks whose share >= mass
  bool keep_diagonal = false;  // always keep the key blocks that overlap the query block's tokens
  int64_t keep_first = 0;      // always keep key blocks 0 .. keep_first-1 (attention sinks)
};

// Token geometry the selection needs: the diagonal depends on both block sizes, and the mass of a
// partial last key block counts only the tokens it has.
struct BlockGeometry {
  int64_t tokens, q_block, k_block;
  int64_t num_q_blocks() const { return (tokens + q_block - 1) / q_block; }
  int64_t num_k_blocks() const { return (tokens + k_block - 1) / k_block; }
};

// Token count of each key block (all k_block but a partial last one): float64 [NK] on `device`.
at::Tensor key_block_sizes(const BlockGeometry& geometry, at::Device device);

// scores [B, H, NQ, NK] -> bool mask of the same shape. Forced blocks count toward top_k (so a
// row keeps exactly top_k blocks as long as top_k >= the forced ones). The mass of block j is
// n_j·exp(score_j) normalised over the row, n_j its token count. Runs on the scores' device with
// no host synchronisation.
at::Tensor select_blocks(const at::Tensor& scores, const BlockGeometry& geometry, const BlockSelection& selection);

// The same selection straight to the CSR the kernels read. On the GPU top-k rows take one kernel
// (a warp a row writes its kept columns; every row has exactly k, so no count pass is needed);
// mass rows are sorted a CTA a row, then compacted by a second kernel. No host synchronisation.
BlockCsr select_blocks_csr(const at::Tensor& scores, const BlockGeometry& geometry, const BlockSelection& selection);

// The oracle: per-row loops and std::sort in fp64 on the CPU, ranking on the values rounded to
// float as the kernel does.
at::Tensor select_blocks_reference(const at::Tensor& scores, const BlockGeometry& geometry,
                                   const BlockSelection& selection);

// The blocks every row keeps regardless of scores: bool [NQ, NK] on `device`.
at::Tensor forced_blocks(const BlockGeometry& geometry, const BlockSelection& selection, at::Device device);

}  // namespace ditkit
