// The exact block map, block density and head classes (pipelines/attention_map.h), on tiny
// hand-built q and k whose answers are known.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "pipelines/attention_map.h"

namespace ditkit {
namespace {

TEST(AttentionMap, BlockMapMatchesFullSoftmaxAtAnyChunkSize) {
  // 60 tokens in blocks of 16 x 8: both last blocks are partial (12 queries, 4 keys).
  const LatentGrid grid{4, 3, 5};
  const BlockShape blocks{16, 8};
  at::manual_seed(0);
  const at::Tensor q = at::randn({2, 60, 3, 8}) * 2, k = at::randn({2, 60, 3, 8}) * 2;

  const at::Tensor p = at::softmax(at::matmul(q.transpose(1, 2), k.transpose(1, 2).transpose(-1, -2)) / std::sqrt(8.0), -1)
                           .to(at::kDouble);  // [B, H, S, S]
  at::Tensor expected = at::zeros({2, 3, 4, 8}, at::kDouble);
  at::Tensor spatial = at::zeros({2, 3}, at::kDouble), temporal = at::zeros({2, 3}, at::kDouble);
  for (int64_t i = 0; i < 60; ++i)
    for (int64_t j = 0; j < 60; ++j) {
      const at::Tensor pij = p.select(2, i).select(2, j);
      const int64_t rows = std::min<int64_t>(16, 60 - (i / 16) * 16);
      expected.select(2, i / 16).select(2, j / 8) += pij / static_cast<double>(rows);
      if (std::abs(i / 15 - j / 15) <= 1) spatial += pij / 60.0;
      if (i % 15 == j % 15) temporal += pij / 60.0;
    }

  for (int64_t chunk_bytes : {int64_t{1}, int64_t{16} * 2 * 3 * 60 * 4 * 2, int64_t{1} << 30}) {
    SCOPED_TRACE(chunk_bytes);
    const ExactAttentionMap map = exact_attention_map(q, k, grid, blocks, 0.0, chunk_bytes);
    ASSERT_EQ(map.block_map.sizes(), (at::IntArrayRef{2, 3, 4, 8}));
    EXPECT_TRUE(at::allclose(map.block_map.sum(-1), at::ones({2, 3, 4}), 1e-5, 1e-5));
    EXPECT_TRUE(at::allclose(map.block_map.to(at::kDouble), expected, 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(map.spatial_share.to(at::kDouble), spatial, 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(map.temporal_share.to(at::kDouble), temporal, 1e-5, 1e-6));
  }
}

TEST(AttentionMap, DesignedSpatialTemporalAndUniformHeadsAreClassed) {
  // Head 0 matches tokens of the same frame, head 1 tokens at the same position, head 2 sees
  // nothing (q = 0: uniform attention).
  const LatentGrid grid{6, 2, 3};
  const int64_t F = grid.frames, HW = grid.height * grid.width, S = grid.tokens();
  const at::Tensor token = at::arange(S);
  const double sharp = 5.0;  // 25 on the logit: mass off the pattern is ~e^-25
  const at::Tensor frame_code = at::one_hot(token.div(HW, "floor"), F).to(at::kFloat) * sharp;
  const at::Tensor position_code = at::one_hot(token.remainder(HW), HW).to(at::kFloat) * sharp;
  const at::Tensor zero = at::zeros({S, HW}, at::kFloat);
  // D = HW for every head; the frame code is padded up to it (F <= HW here).
  ASSERT_LE(F, HW);
  const at::Tensor frame_padded = at::constant_pad_nd(frame_code, {0, HW - F});
  const at::Tensor q = at::stack({frame_padded, position_code, zero}, 1).unsqueeze(0);  // [1, S, 3, HW]
  const at::Tensor k = at::stack({frame_padded, position_code, position_code}, 1).unsqueeze(0);

  const ExactAttentionMap map = exact_attention_map(q, k, grid, {128, 64}, /*scale=*/1.0);
  const at::Tensor s = map.spatial_share[0].to(at::kDouble), t = map.temporal_share[0].to(at::kDouble);
  EXPECT_NEAR(s[0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(t[0].item<double>(), 1.0 / HW, 1e-6);
  EXPECT_NEAR(t[1].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(s[1].item<double>(), spatial_mask_share(grid), 1e-6);  // its frames spread evenly
  EXPECT_NEAR(s[2].item<double>(), spatial_mask_share(grid), 1e-6);
  EXPECT_NEAR(t[2].item<double>(), temporal_mask_share(grid), 1e-6);
  EXPECT_EQ(classify_head(s[0].item<double>(), t[0].item<double>(), grid), HeadClass::kSpatial);
  EXPECT_EQ(classify_head(s[1].item<double>(), t[1].item<double>(), grid), HeadClass::kTemporal);
  EXPECT_EQ(classify_head(s[2].item<double>(), t[2].item<double>(), grid), HeadClass::kOther);
}

TEST(AttentionMap, ClassRulePicksTheSmallerMaskThatHolds) {
  const LatentGrid grid{4, 8, 8};
  EXPECT_DOUBLE_EQ(spatial_mask_share(grid), 10.0 / 16.0);  // frames seen: 2, 3, 3, 2 of 4
  EXPECT_DOUBLE_EQ(temporal_mask_share(grid), 1.0 / 64.0);
  EXPECT_EQ(classify_head(0.95, 0.9, grid), HeadClass::kTemporal);  // a head on itself: both hold
  EXPECT_EQ(classify_head(0.85, 0.2, grid), HeadClass::kSpatial);
  EXPECT_EQ(classify_head(0.5, 0.85, grid), HeadClass::kTemporal);
  EXPECT_EQ(classify_head(0.79, 0.79, grid), HeadClass::kOther);
  // Two frames: the spatial mask is every key, so it cannot tell a spatial head.
  EXPECT_EQ(classify_head(1.0, 0.1, LatentGrid{2, 8, 8}), HeadClass::kOther);
  EXPECT_STREQ(to_string(HeadClass::kSpatial), "spatial");
}

TEST(AttentionMap, DensityCountsBlocksByMassOnAKnownMap) {
  // Row 0 reaches 90% and 95% with 3 of 4 blocks and 99% with 4; row 1 with 1, 1 and 3.
  const at::Tensor map = at::tensor({0.5, 0.3, 0.16, 0.04, 0.96, 0.02, 0.015, 0.005}, at::kFloat).view({1, 1, 2, 4});
  const BlockGeometry full{256, 128, 64};
  EXPECT_NEAR(block_density(map, full, 0.90).item<double>(), 0.5, 1e-9);
  EXPECT_NEAR(block_density(map, full, 0.95).item<double>(), 0.5, 1e-9);
  EXPECT_NEAR(block_density(map, full, 0.99).item<double>(), 0.875, 1e-9);
  // A partial last key block (8 tokens) counts by the mass it holds, not by its mass per token.
  const at::Tensor reversed = map.flip(-1);
  const BlockGeometry partial{200, 128, 64};
  EXPECT_NEAR(block_density(reversed, partial, 0.90).item<double>(), 0.5, 1e-9);
  EXPECT_NEAR(block_density(reversed, partial, 0.99).item<double>(), 0.875, 1e-9);
}

}  // namespace
}  // namespace ditkit
