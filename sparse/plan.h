// The plan an AttentionMethod builds and runs: which key blocks each query block attends to,
// in which token order, plus what later methods attach (head classes, linear-branch blocks).
// Plain tensors on the device, built without host synchronisation; a plan can be kept and run
// again at later steps (FlashInfer's plan()/run() split).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels/block_csr.h"
#include "kernels/block_sparse_attention.h"

namespace ditkit {

// The latent token grid after patching: S = frames·height·width tokens, frame-major.
struct LatentGrid {
  int64_t frames = 0, height = 0, width = 0;
  int64_t tokens() const { return frames * height * width; }
};

// Where in the model and the sampling run an attention call happens.
struct AttentionContext {
  int layer = 0;
  int step = 0;
  int num_steps = 1;
  double timestep = 0.0;
  LatentGrid grid;
  int64_t text_length = 0;
};

struct Plan {
  bool dense = false;  // full attention: no block map
  BlockShape blocks;   // query and key block sizes of `csr`
  BlockCsr csr;        // per (batch, head, query block) key blocks, over the permuted tokens
  at::Tensor permutation;          // optional int64 [S] or [H, S]: run() attends over x[perm]
  at::Tensor inverse_permutation;  // present exactly when `permutation` is
  at::Tensor head_class;           // optional int8 [H], method-defined (e.g. spatial / temporal)
  // Optional linear branch (sla): linear attention over exactly the key blocks `csr` does not list
  // (kernels/complement_linear_attention.h), through this float32 [D, D] projection, added to the
  // softmax branch: out = O_s + O_l·Wᵀ. The blocks it covers follow from `csr`, so the plan holds
  // only the weight: the layer's own tensor, which a trainer updates in place.
  at::Tensor linear_projection;
  // At inference, whether the linear branch's last stage runs inside the block-sparse kernel
  // where it can (kernels/complement_linear_attention.h, sparse_linear_attention).
  bool fuse_linear = true;

  // Kept share of the key blocks averaged over rows: a float32 device scalar (1 for dense).
  at::Tensor density(at::Device device) const;
};

// Runs a plan: permute q, k, v if the plan says so, block-sparse (or dense) attention plus the
// linear branch if the plan has one, restore the original token order. Every method's default
// run(). When autograd records (grad mode on and q, k, v or the projection require grad) the
// block-sparse part runs as block_sparse_attention_autograd, so the output is differentiable on
// every device, and `lse` is left undefined except for dense plans.
AttentionOutput execute_plan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan);

// An output computed over permuted tokens, put back in the original order: out [B, S, H, D] and
// lse [B, H, S] (where defined) gathered by `inverse_permutation` ([S] or [H, S]).
AttentionOutput restore_token_order(AttentionOutput r, const at::Tensor& inverse_permutation);

}  // namespace ditkit
