#include "kernels/block_sparse_attention.h"

#include <ATen/ATen.h>

#include <cmath>

namespace ditkit {

namespace {

double check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const BlockCsr& csr,
                            BlockShape blocks, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "block_sparse_attention: q, k, v must share one [B, S, H, D] shape, got ", q.sizes(), " ", k.sizes(),
              " ", v.sizes());
  TORCH_CHECK(blocks.q_block > 0 && blocks.k_block > 0, "block_sparse_attention: block sizes must be positive");
  const int64_t S = q.size(1);
  TORCH_CHECK(csr.batch == q.size(0) && csr.heads == q.size(2) &&
                  csr.num_q_blocks == (S + blocks.q_block - 1) / blocks.q_block &&
                  csr.num_k_blocks == (S + blocks.k_block - 1) / blocks.k_block,
              "block_sparse_attention: block map [", csr.batch, ", ", csr.heads, ", ", csr.num_q_blocks, ", ",
              csr.num_k_blocks, "] does not fit q ", q.sizes(), " in blocks of ", blocks.q_block, "x", blocks.k_block);
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

// Expands a block map [NQ, NK] to tokens [S, S].
at::Tensor token_mask(const at::Tensor& block_mask, int64_t S, BlockShape blocks) {
  return block_mask.repeat_interleave(blocks.q_block, 0)
      .narrow(0, 0, S)
      .repeat_interleave(blocks.k_block, 1)
      .narrow(1, 0, S);
}

}  // namespace

AttentionOutput block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockCsr& csr, BlockShape blocks, double scale) {
  scale = check_attention_args(q, k, v, csr, blocks, scale);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  at::Tensor mask = csr_to_mask(csr);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({B, H, S}, q.options().dtype(at::kFloat));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      at::Tensor qh = q.select(0, b).select(1, h).to(at::kFloat);  // [S, D]
      at::Tensor kh = k.select(0, b).select(1, h).to(at::kFloat);
      at::Tensor vh = v.select(0, b).select(1, h).to(at::kFloat);
      at::Tensor scores = at::matmul(qh, kh.t()).mul_(scale);
      scores.masked_fill_(token_mask(mask[b][h], S, blocks).logical_not(), -INFINITY);
      at::Tensor row_lse = at::logsumexp(scores, -1, /*keepdim=*/true);
      // Empty rows: lse = -inf makes exp(-inf - -inf) NaN; their weights are zero instead.
      at::Tensor p = at::exp(scores - row_lse).nan_to_num_(0.0);
      out.select(0, b).select(1, h).copy_(at::matmul(p, vh));
      lse[b][h].copy_(row_lse.squeeze(-1));
    }
  return {out, lse};
}

AttentionOutput block_sparse_attention_reference(const at::Tensor& q_in, const at::Tensor& k_in,
                                                 const at::Tensor& v_in, const BlockCsr& csr_in, BlockShape blocks,
                                                 double scale) {
  scale = check_attention_args(q_in, k_in, v_in, csr_in, blocks, scale);
  at::Tensor q = q_in.to(at::kCPU, at::kDouble), k = k_in.to(at::kCPU, at::kDouble),
             v = v_in.to(at::kCPU, at::kDouble);
  at::Tensor offsets = csr_in.row_offsets.to(at::kCPU, at::kLong), cols = csr_in.col_indices.to(at::kCPU, at::kLong);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t NQ = csr_in.num_q_blocks;
  at::Tensor out = at::zeros({B, S, H, D}, at::kDouble);
  at::Tensor lse = at::full({B, H, S}, -INFINITY, at::kDouble);
  auto off = offsets.accessor<int64_t, 1>();
  auto col = cols.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i) {
        const int64_t r = (b * H + h) * NQ + i;
        std::vector<int64_t> keys;
        for (int64_t e = off[r]; e < off[r + 1]; ++e)
          for (int64_t t = col[e] * blocks.k_block; t < std::min(S, (col[e] + 1) * blocks.k_block); ++t)
            keys.push_back(t);
        if (keys.empty()) continue;
        const int64_t s0 = i * blocks.q_block, len = std::min(blocks.q_block, S - s0);
        at::Tensor idx = at::tensor(keys, at::kLong);
        at::Tensor qi = q[b].narrow(0, s0, len).select(1, h);             // [len, D]
        at::Tensor kj = k[b].select(1, h).index_select(0, idx);           // [n, D]
        at::Tensor vj = v[b].select(1, h).index_select(0, idx);
        at::Tensor scores = at::matmul(qi, kj.t()) * scale;
        at::Tensor row_lse = at::logsumexp(scores, -1, true);
        out[b].narrow(0, s0, len).select(1, h).copy_(at::matmul(at::exp(scores - row_lse), vj));
        lse[b][h].narrow(0, s0, len).copy_(row_lse.squeeze(-1));
      }
  return {out.to(q_in.scalar_type()), lse.to(at::kFloat)};
}

}  // namespace ditkit
