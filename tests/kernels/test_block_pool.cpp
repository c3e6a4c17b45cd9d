#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/block_pool.h"

namespace ditkit {
namespace {

// Straight loops over the definition, independent of the ATen-based reference.
at::Tensor naive_pool(const at::Tensor& x, int64_t block) {
  at::Tensor xd = x.to(at::kDouble).contiguous();
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t nb = (S + block - 1) / block;
  at::Tensor out = at::zeros({B, nb, H, D}, at::kDouble);
  auto xa = xd.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < nb; ++j) {
      int64_t s1 = std::min(S, (j + 1) * block);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          double sum = 0;
          for (int64_t s = j * block; s < s1; ++s) sum += xa[b][s][h][d];
          oa[b][j][h][d] = sum / static_cast<double>(s1 - j * block);
        }
    }
  return out;
}

struct Shape {
  int64_t B, S, H, D, block;
};
// Awkward on purpose: one token, exactly one block, one past a block, S not a multiple of the
// block, several heads and batches, D not a multiple of a warp, blocks of a few tokens.
const Shape kShapes[] = {{1, 1, 1, 8, 128},   {1, 128, 2, 64, 128}, {2, 129, 3, 16, 128},
                         {2, 300, 4, 5, 64},  {1, 1000, 12, 128, 128}, {3, 77, 1, 33, 7}, {2, 50, 2, 16, 5}};

TEST(BlockPool, ReferenceMatchesLoopsOnAwkwardShapes) {
  for (const Shape& s : kShapes) {
    at::Tensor x = at::randn({s.B, s.S, s.H, s.D}, at::kFloat);
    at::Tensor got = block_mean_pool_reference(x, s.block);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{s.B, (s.S + s.block - 1) / s.block, s.H, s.D}));
    EXPECT_TRUE(at::allclose(got.to(at::kDouble), naive_pool(x, s.block), 1e-6, 1e-6))
        << "B=" << s.B << " S=" << s.S << " H=" << s.H << " D=" << s.D << " block=" << s.block;
  }
}

TEST(BlockPool, PartialLastBlockIsAveragedOverItsOwnTokens) {
  // Tokens hold their index: block 1 of size 4 over S=6 has tokens 4 and 5, mean 4.5, not 9/4.
  at::Tensor x = at::arange(6, at::kFloat).view({1, 6, 1, 1});
  at::Tensor got = block_mean_pool(x, 4);
  EXPECT_FLOAT_EQ(got[0][0][0][0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(got[0][1][0][0].item<float>(), 4.5f);
}

TEST(BlockPool, AcceptsStridedViews) {
  // [B, H, S, D] storage seen as [B, S, H, D], as attention code produces it.
  at::Tensor base = at::randn({2, 3, 200, 16});
  at::Tensor x = base.transpose(1, 2);
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(at::allclose(block_mean_pool(x, 64).to(at::kDouble), naive_pool(x, 64), 1e-6, 1e-6));
}

TEST(BlockPool, EmptySequenceGivesNoBlocks) {
  at::Tensor got = block_mean_pool(at::zeros({2, 0, 3, 8}), 128);
  EXPECT_EQ(got.sizes(), (std::vector<int64_t>{2, 0, 3, 8}));
}

TEST(BlockPool, RejectsBadArguments) {
  EXPECT_THROW(block_mean_pool(at::zeros({4, 8}), 2), c10::Error);
  EXPECT_THROW(block_mean_pool(at::zeros({1, 8, 1, 4}), 0), c10::Error);
  EXPECT_THROW(block_mean_pool(at::zeros({1, 8, 1, 4}, at::kInt), 2), c10::Error);
}

TEST(BlockPoolCuda, MatchesReferenceOnAwkwardShapes) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    double tol = dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 2e-3 : 1.6e-2;
    for (const Shape& s : kShapes) {
      at::Tensor x = at::randn({s.B, s.S, s.H, s.D}).to(dtype);
      at::Tensor got = block_mean_pool(x.cuda(), s.block).cpu();
      at::Tensor want = block_mean_pool_reference(x, s.block);
      EXPECT_TRUE(at::allclose(got.to(at::kDouble), want.to(at::kDouble), tol, tol))
          << dtype << " B=" << s.B << " S=" << s.S << " H=" << s.H << " D=" << s.D << " block=" << s.block;
    }
  }
  at::Tensor strided = at::randn({2, 3, 300, 64}, at::kCUDA).transpose(1, 2);
  EXPECT_TRUE(at::allclose(block_mean_pool(strided, 128).cpu(), block_mean_pool_reference(strided.cpu(), 128),
                           1e-5, 1e-5));
  EXPECT_EQ(block_mean_pool(at::zeros({1, 0, 2, 8}, at::kCUDA), 128).size(1), 0);
}

}  // namespace
}  // namespace ditkit
