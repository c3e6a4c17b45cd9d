#include "pipelines/attention_map.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace ditkit {

ExactAttentionMap exact_attention_map(const at::Tensor& q, const at::Tensor& k, const LatentGrid& grid,
                                      BlockShape blocks, double scale, int64_t chunk_bytes) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes(), "exact_attention_map: q and k must both be [B, S, H, D], got ",
              q.sizes(), " and ", k.sizes());
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  TORCH_CHECK(S == grid.tokens(), "exact_attention_map: ", S, " tokens do not fill the grid ", grid.frames, "x",
              grid.height, "x", grid.width);
  TORCH_CHECK(blocks.q_block > 0 && blocks.k_block > 0, "exact_attention_map: block sizes must be positive");
  const int64_t qb = blocks.q_block, kb = blocks.k_block;
  const BlockGeometry geometry{S, qb, kb};
  const int64_t NQ = geometry.num_q_blocks(), NK = geometry.num_k_blocks();
  const int64_t F = grid.frames, HW = grid.height * grid.width;
  const double sc = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(D));

  const at::Tensor qh = q.transpose(1, 2).to(at::kFloat);                    // [B, H, S, D]
  const at::Tensor kt = k.transpose(1, 2).to(at::kFloat).transpose(-1, -2);  // [B, H, D, S]
  auto fopts = qh.options();
  auto lopts = fopts.dtype(at::kLong);

  ExactAttentionMap out;
  out.block_map = at::empty({B, H, NQ, NK}, fopts);
  at::Tensor spatial = at::zeros({B, H}, fopts.dtype(at::kDouble));
  at::Tensor temporal = at::zeros({B, H}, fopts.dtype(at::kDouble));

  const int64_t row_bytes = B * H * S * static_cast<int64_t>(sizeof(float));
  const int64_t chunk_rows = std::max<int64_t>(1, chunk_bytes / row_bytes / qb) * qb;
  for (int64_t r0 = 0; r0 < S; r0 += chunk_rows) {
    const int64_t n = std::min(chunk_rows, S - r0);
    const int64_t nqb = (n + qb - 1) / qb;
    const at::Tensor p = at::softmax(at::matmul(qh.narrow(2, r0, n), kt).mul_(sc), -1);  // [B, H, n, S]

    // Block map: sum over the tokens of each key block, then over the rows of each query block
    // (chunks start on query-block boundaries; zero padding adds no mass), divided by its rows.
    at::Tensor mass = at::constant_pad_nd(p, {0, NK * kb - S}).view({B, H, n, NK, kb}).sum(-1);
    mass = at::constant_pad_nd(mass, {0, 0, 0, nqb * qb - n}).view({B, H, nqb, qb, NK}).sum(3);
    const at::Tensor rows = (S - at::arange(r0, r0 + nqb * qb, qb, lopts)).clamp_max(qb).to(at::kFloat);
    out.block_map.narrow(2, r0 / qb, nqb).copy_(mass / rows.view({1, 1, nqb, 1}));

    // Token-level masks from the query's frame and position on the grid.
    const at::Tensor token = at::arange(r0, r0 + n, lopts);
    const at::Tensor frame = token.div(HW, "floor"), position = token.remainder(HW);
    const at::Tensor by_frame = p.view({B, H, n, F, HW});
    const at::Tensor near = (at::arange(F, lopts).view({1, F}) - frame.view({n, 1})).abs() <= 1;  // [n, F]
    spatial += (by_frame.sum(-1) * near).sum({2, 3}).to(at::kDouble);
    temporal += by_frame.gather(-1, position.view({1, 1, n, 1, 1}).expand({B, H, n, F, 1})).sum({2, 3, 4}).to(at::kDouble);
  }
  out.spatial_share = (spatial / static_cast<double>(S)).to(at::kFloat);
  out.temporal_share = (temporal / static_cast<double>(S)).to(at::kFloat);
  return out;
}

at::Tensor block_density(const at::Tensor& block_map, const BlockGeometry& geometry, double mass) {
  TORCH_CHECK(block_map.dim() == 4, "block_density: block_map must be [B, H, NQ, NK], got ", block_map.sizes());
  // The mass selection weighs block j by n_j·exp(score_j); the log of its mean mass per token
  // makes that weight the block's mass (an empty block's -inf weighs nothing).
  const at::Tensor scores =
      block_map.to(at::kDouble).log() - key_block_sizes(geometry, block_map.device()).log();
  BlockSelection selection;
  selection.mass = mass;
  return select_blocks(scores, geometry, selection).to(at::kDouble).mean({2, 3});
}

const char* to_string(HeadClass head_class) {
  switch (head_class) {
    case HeadClass::kSpatial: return "spatial";
    case HeadClass::kTemporal: return "temporal";
    case HeadClass::kOther: return "other";
  }
  return "?";
}

double spatial_mask_share(const LatentGrid& grid) {
  // A query in frame f sees frames max(f-1, 0) .. min(f+1, F-1), each a 1/F share of the keys.
  const int64_t F = grid.frames;
  double frames_seen = 0;
  for (int64_t f = 0; f < F; ++f) frames_seen += static_cast<double>(std::min(f + 1, F - 1) - std::max<int64_t>(f - 1, 0) + 1);
  return frames_seen / static_cast<double>(F * F);
}

double temporal_mask_share(const LatentGrid& grid) { return 1.0 / static_cast<double>(grid.height * grid.width); }

HeadClass classify_head(double spatial_share, double temporal_share, const LatentGrid& grid, double threshold) {
  // A mask that uniform attention would already fill to the threshold says nothing about the head.
  const bool spatial = spatial_share >= threshold && spatial_mask_share(grid) < threshold;
  const bool temporal = temporal_share >= threshold && temporal_mask_share(grid) < threshold;
  if (spatial && temporal)
    return temporal_mask_share(grid) < spatial_mask_share(grid) ? HeadClass::kTemporal : HeadClass::kSpatial;
  if (spatial) return HeadClass::kSpatial;
  if (temporal) return HeadClass::kTemporal;
  return HeadClass::kOther;
}

}  // namespace ditkit
