#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
