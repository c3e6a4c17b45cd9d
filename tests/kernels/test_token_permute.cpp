#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kernels/token_permute.h"

namespace ditkit {
namespace {

struct Shape {
  int64_t B, S, H, D;
};
// One token, S not a multiple of anything, several heads and batches, D of 8 bf16 (one 16-byte
// vector), 128, and 5 (rows of 10 or 20 bytes: the gather fallback on the GPU).
const Shape kShapes[] = {{1, 1, 1, 8}, {2, 129, 3, 64}, {1, 300, 12, 128}, {3, 77, 2, 5}};

at::Tensor random_permutations(int64_t rows, int64_t S) {
  return at::argsort(at::rand({rows, S}), /*dim=*/-1, /*descending=*/false);
}

TEST(TokenPermute, SharedAndPerHeadPermutationsMatchTheLoopsAndInvert) {
  for (const Shape& s : kShapes) {
    at::Tensor x = at::randn({s.B, s.S, s.H, s.D});
    for (at::Tensor perm : {random_permutations(1, s.S).squeeze(0), random_permutations(s.H, s.S)}) {
      at::Tensor y = permute_tokens(x, perm);
      EXPECT_TRUE(at::equal(y, permute_tokens_reference(x, perm))) << s.S << " tokens, perm " << perm.sizes();
      EXPECT_TRUE(at::equal(permute_tokens(y, invert_permutation(perm)), x));
    }
  }
}

// Tiles listed tile by tile, each frame-major, by nested loops: sides that are not multiples of
// the tile's (edge tiles cut short), a tile larger than the grid (the identity), one token.
TEST(TokenPermute, TilePermutationListsTilesByNestedLoops) {
  struct Case {
    int64_t F, H, W, tf, th, tw;
  };
  for (const Case& c : {Case{8, 16, 16, 4, 4, 4}, Case{3, 7, 9, 2, 3, 4}, Case{5, 6, 11, 1, 4, 4},
                        Case{2, 3, 5, 4, 4, 4}, Case{1, 1, 1, 4, 4, 4}}) {
    std::vector<int64_t> want;
    for (int64_t f0 = 0; f0 < c.F; f0 += c.tf)
      for (int64_t h0 = 0; h0 < c.H; h0 += c.th)
        for (int64_t w0 = 0; w0 < c.W; w0 += c.tw)
          for (int64_t f = f0; f < std::min(f0 + c.tf, c.F); ++f)
            for (int64_t h = h0; h < std::min(h0 + c.th, c.H); ++h)
              for (int64_t w = w0; w < std::min(w0 + c.tw, c.W); ++w) want.push_back((f * c.H + h) * c.W + w);
    EXPECT_TRUE(at::equal(tile_permutation(c.F, c.H, c.W, c.tf, c.th, c.tw), at::tensor(want, at::kLong)))
        << c.F << "x" << c.H << "x" << c.W << " in tiles " << c.tf << "x" << c.th << "x" << c.tw;
  }
  EXPECT_THROW(tile_permutation(2, 3, 5, 0, 4, 4), c10::Error);
  EXPECT_THROW(tile_permutation(0, 3, 5, 1, 1, 1), c10::Error);
}

// Where autograd records x the gather is differentiable on every device: the gradient of
// sum(permute(x) * g) is g put back in the original order.
TEST(TokenPermute, GradientFlowsBackThroughTheGather) {
  std::vector<at::Device> devices{at::kCPU};
  if (at::hasCUDA()) devices.push_back(at::kCUDA);
  for (at::Device device : devices)
    for (at::Tensor perm : {random_permutations(1, 129).squeeze(0), random_permutations(3, 129)}) {
      at::Tensor x = at::randn({2, 129, 3, 64}, device).requires_grad_(true);
      at::Tensor g = at::randn({2, 129, 3, 64}, device);
      at::Tensor y = permute_tokens(x, perm.to(device));
      ASSERT_TRUE(y.requires_grad()) << device;
      (y * g).sum().backward();
      EXPECT_TRUE(at::equal(x.grad().cpu(), permute_tokens_reference(g.cpu(), invert_permutation(perm))))
          << device << ", perm " << perm.sizes();
    }
}

TEST(TokenPermute, CudaMatchesTheLoopsOnStridedViews) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const Shape& s : kShapes)
    for (at::ScalarType type : {at::kBFloat16, at::kFloat}) {
      // q of a fused [B, S, 3, H, D] projection: strided along S, the case the model hands over.
      at::Tensor qkv = at::randn({s.B, s.S, 3, s.H, s.D}).to(type);
      at::Tensor q = qkv.select(2, 0);
      for (at::Tensor perm : {random_permutations(1, s.S).squeeze(0), random_permutations(s.H, s.S)}) {
        at::Tensor got = permute_tokens(q.cuda(), perm.cuda());
        // .cuda() of a strided CPU view is contiguous; slice on the GPU to keep the strides.
        at::Tensor got_strided = permute_tokens(qkv.cuda().select(2, 0), perm.cuda());
        at::Tensor want = permute_tokens_reference(q, perm);
        EXPECT_TRUE(at::equal(got.cpu(), want)) << s.S << " tokens, D " << s.D << ", " << type;
        EXPECT_TRUE(at::equal(got_strided.cpu(), want)) << s.S << " tokens, D " << s.D << ", " << type;
      }
    }
}

}  // namespace
}  // namespace ditkit
