// SLA's linear branch against its fp64 loop oracle: awkward shapes, rows whose critical set is
// everything (empty complement) or nothing (the whole of linear attention).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kernels/block_csr.h"
#include "kernels/complement_linear_attention.h"
#include "kernels/linear_attention.h"

namespace ditkit {
namespace {

bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return at::allclose(a.to(at::kCPU, at::kDouble), b.to(at::kCPU, at::kDouble), tol, tol);
}

struct Shape {
  int64_t B, S, H, D;
  BlockShape blocks;
};
// Partial last blocks of both sizes, S below one key block, exactly one query block, B, H > 1.
const Shape kShapes[] = {{2, 189, 3, 16, {128, 64}}, {1, 50, 2, 8, {128, 64}},   {1, 128, 1, 32, {128, 128}},
                         {2, 300, 2, 16, {128, 128}}, {1, 257, 4, 8, {128, 64}}};

// A random critical map with a row that lists nothing and a row (the partial last query block's,
// where there are two) that lists every block.
at::Tensor critical_mask(const Shape& s) {
  const int64_t NQ = (s.S + s.blocks.q_block - 1) / s.blocks.q_block;
  const int64_t NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
  at::Tensor m = at::rand({s.B, s.H, NQ, NK}) < 0.4;
  m[0][0][0].fill_(false);
  m[s.B - 1][s.H - 1][NQ - 1].fill_(true);
  return m;
}

TEST(ComplementLinearAttention, MatchesReferenceOnAwkwardShapes) {
  for (const Shape& s : kShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D});
    BlockCsr csr = mask_to_csr(critical_mask(s));
    at::Tensor got = complement_linear_attention(q, k, v, csr, s.blocks);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(close(got, complement_linear_attention_reference(q, k, v, csr, s.blocks), 1e-5)) << "S=" << s.S;
    // fp64 in, fp64 through: agrees with the oracle to rounding.
    at::Tensor got64 = complement_linear_attention(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), csr, s.blocks);
    EXPECT_EQ(got64.scalar_type(), at::kDouble);
    at::Tensor want64 = complement_linear_attention_reference(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble),
                                                              csr, s.blocks);
    EXPECT_TRUE(close(got64, want64, 1e-12)) << "S=" << s.S;
  }
}

TEST(ComplementLinearAttention, EmptyComplementIsZeroAndNoCriticalBlocksIsLinearAttention) {
  const Shape s{2, 189, 3, 16, {128, 64}};
  at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}), v = at::randn({s.B, s.S, s.H, s.D});
  at::Tensor all = at::ones({s.B, s.H, 2, 3}, at::kBool);
  EXPECT_TRUE(at::equal(complement_linear_attention(q, k, v, mask_to_csr(all), s.blocks), at::zeros_like(q)));
  EXPECT_TRUE(close(complement_linear_attention(q, k, v, mask_to_csr(all.logical_not()), s.blocks),
                    linear_attention(q, k, v), 1e-5));
  // Strided views (v's heads interleaved with another tensor's) read as their values.
  at::Tensor wide = at::randn({s.B, s.S, s.H, 2 * s.D});
  at::Tensor vs = wide.narrow(3, 0, s.D);
  BlockCsr csr = mask_to_csr(critical_mask(s));
  EXPECT_TRUE(close(complement_linear_attention(q, k, vs, csr, s.blocks),
                    complement_linear_attention(q, k, vs.contiguous(), csr, s.blocks), 1e-6));
}

// The normaliser: with v = 1 every row whose complement holds a key gets exactly 1, the others 0.
TEST(ComplementLinearAttention, NormalisesOverTheComplementOnly) {
  const Shape s{1, 300, 2, 16, {128, 64}};
  at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D});
  at::Tensor m = at::rand({1, 2, 3, 5}) < 0.5;
  m[0][1][2].fill_(true);
  at::Tensor got = complement_linear_attention(q, k, at::ones_like(q), mask_to_csr(m), s.blocks);
  at::Tensor has_complement = m.logical_not().any(-1).to(at::kFloat);  // [B, H, NQ]
  at::Tensor want = has_complement.repeat_interleave(128, 2).narrow(2, 0, s.S).transpose(1, 2).unsqueeze(-1);
  EXPECT_TRUE(close(got, want.expand_as(got), 1e-5));
}

TEST(ComplementLinearAttentionCuda, MatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const Shape& s : kShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D});
    at::Tensor m = critical_mask(s);
    at::Tensor want = complement_linear_attention_reference(q, k, v, mask_to_csr(m), s.blocks);
    BlockCsr csr = mask_to_csr(m.cuda());
    EXPECT_TRUE(close(complement_linear_attention(q.cuda(), k.cuda(), v.cuda(), csr, s.blocks), want, 1e-4));
    at::Tensor got = complement_linear_attention(q.cuda().to(at::kBFloat16), k.cuda().to(at::kBFloat16),
                                                 v.cuda().to(at::kBFloat16), csr, s.blocks);
    EXPECT_TRUE(close(got, want, 3e-2)) << "bf16 S=" << s.S;
  }
}

}  // namespace
}  // namespace ditkit
