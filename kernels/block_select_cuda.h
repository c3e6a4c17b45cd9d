// Launchers for the CUDA block-selection kernels (ATen-free; block_select.cpp and block_csr.cpp
// hold the checks). Top-k rows: one warp a row, which finds the k-th largest score bit by bit;
// mass rows: one CTA a row, which sorts it in shared memory. Either way ties go to the lower
// index, as in the CPU reference.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ditkit::cuda {

struct SelectArgs {
  const float* scores;  // [R, NK] contiguous, rows in (b, h, i) order; row r is query block r % NQ
  int64_t rows, num_q_blocks, num_k_blocks;
  int64_t tokens, q_block, k_block;  // the partial last key block's mass counts only its tokens
  int64_t top_k;                     // > 0: top-k mode
  double mass;                       // top_k == 0: keep the fewest blocks reaching this share
  int64_t keep_first;                // always kept: key blocks below this ...
  bool keep_diagonal;                // ... and those overlapping the query block's tokens
  int32_t* offsets;                  // top-k mode: [R + 1], written as r·k
  int32_t* cols;                     // top-k mode: [R·k], ascending within each row
  uint8_t* keep;                     // mass mode: [R, NK]
  int32_t* counts;                   // mass mode: [R] kept blocks per row
};

// Largest NK the selection kernels hold (the mass kernel's shared memory, 36 KB a CTA; the top-k
// warp's registers); wider rows take the ATen path. 2,048 key blocks of 64 tokens cover 131,072 tokens.
constexpr int64_t kMaxSelectBlocks = 2048;

cudaError_t launch_select_blocks(const SelectArgs& args, cudaStream_t stream);

// keep [R, NK] (0/1) and offsets [R + 1] -> cols: row r's kept columns, ascending, at offsets[r].
cudaError_t launch_compact_rows(const uint8_t* keep, const int32_t* offsets, int64_t rows, int64_t num_k_blocks,
                                int32_t* cols, cudaStream_t stream);

}  // namespace ditkit::cuda
