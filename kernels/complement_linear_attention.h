// The linear branch of the sparse-linear hybrid (SLA): for each query block, linear attention
// (softmax feature map over the head dimension, kernels/linear_attention.h) over exactly the key
// blocks its block-sparse softmax branch does not visit, so the two branches split the keys.
//
// Per key block j: h_j = φ(K_j)ᵀV_j [D, D] and z_j = Σ_t φ(k_t) [D]. For the query block of CSR
// row r, with C(r) the critical blocks the CSR lists:
//   H_c = Σ_{j ∉ C(r)} h_j = H_total − Σ_{j ∈ C(r)} h_j,   Z_c likewise,
//   O_l = φ(q) H_c / (φ(q)·Z_c)                                  (0 where the complement is empty)
// The complement sums are one batched GEMM of the complement's 0/1 block map
// [NQ, NK] against the stacked summaries [NK, D·D + D], per (batch, head). The GEMM reads each
// summary once per 128-row output tile (twice per head at 256 query blocks), where gathering the
// critical blocks' summaries row by row reads one once per row that lists it (26 blocks x 256
// rows = 6,656 summary reads per head at 5% of 512 key blocks, against 1,024): less memory
// traffic for a few GFLOP the tensor cores absorb. And a 0/1 GEMM over the complement needs no
// subtraction, so an empty complement sums to exactly zero.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>

#include "kernels/block_csr.h"
#include "kernels/block_sparse_attention.h"

namespace ditkit {

// q, k, v [B, S, H, D] (self-attention, strided views fine); `critical` lists per (batch, head,
// query block) the key blocks the softmax branch covers, in `blocks`. Returns O_l [B, S, H, D] in
// q's dtype. Computed in fp64 for fp64 inputs, else fp32, except that on the GPU half and
// bfloat16 inputs stay in their dtype throughout (feature maps, summaries, GEMMs with fp32
// accumulation; the 0/1 map is exact, every intermediate rounds to the inputs' precision): the
// branch is memory-bound, and fp32 intermediates would double its traffic. ATen ops only: the same code runs on
// every device, under autograd too, and never synchronises with the host.
at::Tensor complement_linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockCsr& critical, BlockShape blocks);

// Inference: out += complement_linear_attention(q, k, v, critical, blocks)·projectionᵀ, where out
// [B, S, H, D] is in q's dtype (the softmax branch's output) and projection is [D, D] (applied in
// q's dtype). Where projected_complement_linear_attention_uses_kernel holds, CUDA kernels add in
// place, with the projection folded into the summaries (O_l·Wᵀ = φ(Q) Σ_j (h_j Wᵀ) / den, linear
// in h): per key block the summary [h_j·Wᵀ; z_j], h_j = φ(K_j)ᵀV_j rounded to q's dtype before
// the projection (kernel), the complement sums as above (one 0/1 GEMM for both), then
// φ(Q_i) H_c / (φ(Q_i)·Z_c) added to each row (kernel). Half or bfloat16 features and summaries
// with fp32 accumulation, like the op above on the GPU. Elsewhere `out` is rebound to a new
// tensor, the op above plus one addmm (which autograd records). Never synchronises with the host.
// `after_stage`, where given, is called on the host as each stage of the CUDA path is enqueued,
// with its name ("summaries", "complement map", "complement GEMM", "combine"), so that a
// benchmark can record CUDA events between them; the fallback never calls it.
void add_projected_complement_linear_attention(
    at::Tensor& out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const BlockCsr& critical,
    BlockShape blocks, const at::Tensor& projection,
    const std::function<void(const char* stage)>& after_stage = nullptr);

// Whether that takes the CUDA kernels (what tests assert): q, k, v and out on one GPU of compute
// capability 8.0 or later, all bf16 or all fp16, head dim 64 or 128, query blocks of 128 and key
// blocks of 64 or 128, token rows contiguous with 16-byte aligned addresses and strides, and
// autograd not recording.
bool projected_complement_linear_attention_uses_kernel(const at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v, BlockShape blocks,
                                                       const at::Tensor& projection);

// Inference, both of SLA's branches: O_s + O_l·Wᵀ, with O_s the block-sparse softmax branch over
// `critical` (its lse returned with it). With `fused`, where sparse_linear_attention_fuses holds,
// the combine runs in the block-sparse kernel's epilogue (block_sparse_attention_with_linear)
// after the summaries (unprojected: the kernel applies Wᵀ once per query row instead of once per
// key block's summary), complement map and GEMM above, which saves reading Q and reading and
// writing the output once more; `after_stage` then names "summaries", "complement map",
// "complement GEMM" and "attention + combine". Elsewhere, or without `fused`:
// block_sparse_attention then add_projected_complement_linear_attention, `after_stage` naming
// "attention" and that function's stages where its kernels run. `summaries`, where defined, are
// fused_key_block_summaries(...).summaries for these k and v: the fused path then skips its first
// stage (and does not name it); elsewhere they are an error.
AttentionOutput sparse_linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const BlockCsr& critical, BlockShape blocks, const at::Tensor& projection,
                                        bool fused = true,
                                        const std::function<void(const char* stage)>& after_stage = nullptr,
                                        const at::Tensor& summaries = {});

// Where both kernels take these inputs and the block-sparse one fuses the combine (head dim 128).
bool sparse_linear_attention_fuses(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, BlockShape blocks,
                                   const at::Tensor& projection);

// The fused path's first stage on its own, for a planner that scores key blocks from the same pass
// over k (sla): the unprojected summaries [h_j; z_j] [B, H, NK, D + 1, D] in q's dtype, for
// sparse_linear_attention(..., summaries), and k's block means [B, NK, H, D], what
// block_mean_pool(k, blocks.k_block) gives up to fp32 summation order. Saves the planner a read
// of k. Nothing where sparse_linear_attention_fuses does not hold or the Hopper summaries kernel
// does not run (head dim 128, key blocks of 64 or 128).
struct KeyBlockSummaries {
  at::Tensor summaries;
  at::Tensor k_means;
};
std::optional<KeyBlockSummaries> fused_key_block_summaries(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, BlockShape blocks,
                                                           const at::Tensor& projection);

// The oracle: per query token, the quadratic form Σ_s (φ(q)·φ(k_s)) v_s / Σ_s φ(q)·φ(k_s) over
// the tokens of the key blocks the row does not list, explicit loops in fp64 on the CPU.
at::Tensor complement_linear_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const BlockCsr& critical, BlockShape blocks);

}  // namespace ditkit
