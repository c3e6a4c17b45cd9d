// Launchers for the DiT block's fused row kernels. Kept free of ATen so nvcc compiles the .cu
// quickly; the ATen-facing checks and the dispatch live in dit_block_ops.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/block_pool_cuda.h"  // ElementType

namespace ditkit::cuda {

// Rows too wide for a warp are held by a CTA of at most kRowThreadsMax threads with
// kRowVecsPerThread 16-byte vectors each: rows up to 16,384 half or 8,192 fp32 elements (Wan's
// widest is 5,120).
constexpr int kRowThreadsMax = 512;
constexpr int kRowVecsPerThread = 4;

// Rows of `channels` elements, `rows_per_batch` rows per batch entry; per-batch fp32 vectors
// ([B, C], stride batch_stride, unit stride along C) may be null.
struct RowShape {
  int64_t rows, channels, rows_per_batch;
};

struct ModulatedLayerNormArgs {
  const void* x;
  void* out;
  ElementType type;
  RowShape shape;
  const float* weight;  // [C] or null
  const float* bias;    // [C] or null
  const float* scale;   // [B, C] or null: out *= 1 + scale
  const float* shift;   // [B, C] or null: out += shift
  int64_t modulation_batch_stride;
  float eps;
};

struct GatedResidualArgs {
  const void* x;
  const void* y;
  void* out;
  ElementType type;
  RowShape shape;
  const float* gate;  // [B, C] or null (gate 1)
  int64_t gate_batch_stride;
};

struct RmsNormRopeArgs {
  const void* x;  // [rows, C], C = heads * head_dim, head_dim a multiple of the 16-byte vector
  void* out;      // same layout
  ElementType type;
  RowShape shape;
  const void* weight;  // [C], of `type`, 16-byte aligned
  const float* cos;    // [rows_per_batch, head_dim / 2], 16-byte aligned, or null (no rotation)
  const float* sin;
  int64_t head_dim;
  float eps;
};

cudaError_t launch_modulated_layer_norm(const ModulatedLayerNormArgs& args, cudaStream_t stream);
cudaError_t launch_gated_residual(const GatedResidualArgs& args, cudaStream_t stream);
cudaError_t launch_rms_norm_rope(const RmsNormRopeArgs& args, cudaStream_t stream);

}  // namespace ditkit::cuda
