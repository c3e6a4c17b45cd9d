// The block-sparse layout every sparse kernel reads: per (batch, head, query block) row, a
// sorted list of key blocks in CSR form. Built on the device with no host synchronisation, so
// the number of kept blocks is known only on the device: col_indices has room for every block
// and entries past row_offsets[R] are unused.
#pragma once

#include <ATen/core/Tensor.h>

namespace ditkit {

struct BlockCsr {
  at::Tensor row_offsets;  // int32 [R + 1], R = B·H·NQ, rows in (b, h, i) order
  at::Tensor col_indices;  // int32 [R·NK] (capacity); row r's blocks are [row_offsets[r], row_offsets[r+1])
  int64_t batch = 0, heads = 0, num_q_blocks = 0, num_k_blocks = 0;
  // Every row's block count where the builder knows it on the host (top-k: exactly k), else -1.
  // The attention kernel then takes rows in index order, with no ordering pass.
  int64_t row_length = -1;

  int64_t rows() const { return batch * heads * num_q_blocks; }
};

// mask bool [B, H, NQ, NK] -> CSR on the mask's device, ascending columns within a row
// (on the GPU: row counts, a prefix sum, then a compacting kernel).
BlockCsr mask_to_csr(const at::Tensor& mask);

// CSR -> bool [B, H, NQ, NK] on the CSR's device (no host synchronisation).
at::Tensor csr_to_mask(const BlockCsr& csr);

// The oracle: loops on the CPU; col_indices has exactly nnz entries.
BlockCsr mask_to_csr_reference(const at::Tensor& mask);

// Kept fraction of the key blocks, averaged over rows (a device scalar, float32).
at::Tensor csr_block_density(const BlockCsr& csr);

}  // namespace ditkit
