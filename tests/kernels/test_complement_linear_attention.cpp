// SLA's linear branch against its fp64 loop oracle: awkward shapes, rows whose critical set is
// everything (empty complement) or nothing (the whole of linear attention); the inference path
// that adds it, projected, onto the softmax output (on the GPU the CUDA kernels, in place).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/block_csr.h"
#include "kernels/block_pool.h"
#include "kernels/complement_linear_attention.h"
#include "kernels/linear_attention.h"
#include "tests/model_test_support.h"

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

// A case's name in failure messages.
std::string describe(const Shape& s, at::ScalarType dtype) {
  return std::string(c10::toString(dtype)) + " S=" + std::to_string(s.S) + " D=" + std::to_string(s.D) +
         " kblock=" + std::to_string(s.blocks.k_block);
}

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

// Off the kernels' ground the projected add is the op plus one addmm: the CPU result as before.
TEST(ComplementLinearAttention, ProjectedAddIsTheOpThenTheProjection) {
  for (const Shape& s : kShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D}), w = at::randn({s.D, s.D}) * 0.3;
    at::Tensor softmax_out = at::randn({s.B, s.S, s.H, s.D}), out = softmax_out.clone();
    BlockCsr csr = mask_to_csr(critical_mask(s));
    EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(out, q, k, v, s.blocks, w));
    bool staged = false;
    add_projected_complement_linear_attention(out, q, k, v, csr, s.blocks, w, [&](const char*) { staged = true; });
    EXPECT_FALSE(staged) << "the fallback has no stages to report";
    at::Tensor linear = complement_linear_attention_reference(q, k, v, csr, s.blocks).to(at::kDouble);
    at::Tensor want = softmax_out.to(at::kDouble) + at::matmul(linear, w.to(at::kDouble).t());
    EXPECT_TRUE(close(out, want, 1e-5)) << "S=" << s.S;
  }
}

// Both branches off the GPU: block-sparse attention plus the projected add, for sla's inference;
// the fused kernel is refused with a message that says what to check.
TEST(ComplementLinearAttention, SparseLinearAttentionIsBothBranchesOnTheCpu) {
  for (const Shape& s : kShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D}), w = at::randn({s.D, s.D}) * 0.3;
    BlockCsr csr = mask_to_csr(critical_mask(s));
    EXPECT_FALSE(sparse_linear_attention_fuses(q, k, v, s.blocks, w));
    AttentionOutput got = sparse_linear_attention(q, k, v, csr, s.blocks, w);
    AttentionOutput softmax = block_sparse_attention_reference(q, k, v, csr, s.blocks);
    at::Tensor linear = complement_linear_attention_reference(q, k, v, csr, s.blocks).to(at::kDouble);
    EXPECT_TRUE(close(got.out, softmax.out.to(at::kDouble) + at::matmul(linear, w.to(at::kDouble).t()), 1e-5))
        << "S=" << s.S;
    EXPECT_TRUE(close(got.lse.nan_to_num(0, 0, 0), softmax.lse.nan_to_num(0, 0, 0), 1e-5)) << "S=" << s.S;
  }
  const Shape s{1, 300, 2, 128, {128, 64}};
  at::Tensor q = at::randn({s.B, s.S, s.H, s.D});
  at::Tensor sums = at::zeros({s.B, s.H, 3, s.D + 1, s.D}), w = at::zeros({s.D, s.D});
  BlockCsr csr = mask_to_csr(critical_mask(s));
  const std::pair<std::function<void()>, std::string> refused[] = {
      {[&] { block_sparse_attention_with_linear(q, q, q, csr, s.blocks, sums, w); },
       "check block_sparse_attention_fuses_linear"},
      {[&] { block_sparse_attention_with_linear(q, q, q, csr, s.blocks, sums.narrow(3, 0, s.D), w); },
       "complement sums must be"},
      {[&] { block_sparse_attention_with_linear(q, q, q, csr, s.blocks, sums, w.t()); }, "projection must be"},
  };
  for (const auto& [call, message] : refused) {
    try {
      call();
      ADD_FAILURE() << "accepted; expected: " << message;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
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

// The CUDA kernels: out = O_s + O_l·Wᵀ in place, against the fp64 oracle on the same rounded
// inputs. With O_s = 0 the branch alone is held to a bound relative to its largest value. W is
// random, so not symmetric: applying W for Wᵀ fails the bound; half the cases give it as a
// column-major view.
TEST(ComplementLinearAttentionCuda, ProjectedKernelsAddInPlace) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  // S past a whole block, below one, exactly one; both key blocks and head dims; B, H > 1.
  const Shape shapes[] = {{2, 300, 3, 64, {128, 64}},  {1, 389, 2, 128, {128, 128}}, {2, 100, 1, 128, {128, 64}},
                          {1, 128, 3, 64, {128, 128}}, {2, 389, 2, 128, {128, 64}},  {1, 300, 1, 64, {128, 128}}};
  int n = 0;
  for (const Shape& s : shapes)
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf})
      for (bool zero_softmax : {false, true}) {
        const bool fused = n % 2 == 0;  // q, k, v as views of one [B, S, 3, H, D] tensor
        const bool w_view = n++ % 4 < 2;  // every pairing with `fused`
        const std::string what = describe(s, dtype) + (fused ? " fused" : "") + (w_view ? " W column-major" : "") +
                                 (zero_softmax ? " O_s=0" : "");
        const auto opts = at::dtype(dtype).device(at::kCUDA);
        at::Tensor q, k, v;
        if (fused) {
          at::Tensor qkv = at::randn({s.B, s.S, 3, s.H, s.D}, opts);
          q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);
        } else {
          q = at::randn({s.B, s.S, s.H, s.D}, opts), k = at::randn({s.B, s.S, s.H, s.D}, opts),
          v = at::randn({s.B, s.S, s.H, s.D}, opts);
        }
        at::Tensor w = at::randn({s.D, s.D}, at::dtype(at::kFloat).device(at::kCUDA)) / std::sqrt(double(s.D));
        if (w_view) w = w.t().contiguous().t();
        at::Tensor mask = critical_mask(s);
        BlockCsr csr = mask_to_csr(mask.cuda());
        // out: the first S rows of a buffer of whole query blocks and one more row, all 7 past S.
        const int64_t NQ = mask.size(2), rows = NQ * 128 + 1;
        at::Tensor buffer = at::full({s.B, rows, s.H, s.D}, 7.0, opts);
        at::Tensor softmax_out =
            zero_softmax ? at::zeros({s.B, s.S, s.H, s.D}, opts) : at::randn({s.B, s.S, s.H, s.D}, opts);
        at::Tensor out = buffer.narrow(1, 0, s.S).copy_(softmax_out);
        const at::Tensor given = out;
        ASSERT_TRUE(projected_complement_linear_attention_uses_kernel(out, q, k, v, s.blocks, w)) << what;
        std::vector<std::string> stages;
        add_projected_complement_linear_attention(out, q, k, v, csr, s.blocks, w,
                                                  [&](const char* stage) { stages.emplace_back(stage); });
        EXPECT_EQ(stages, (std::vector<std::string>{"summaries", "complement map", "complement GEMM", "combine"}))
            << what;
        EXPECT_TRUE(out.is_same(given)) << what;

        auto f64 = [](const at::Tensor& x) { return x.to(at::kDouble); };
        at::Tensor linear = at::matmul(complement_linear_attention_reference(f64(q), f64(k), f64(v), csr, s.blocks),
                                       w.to(at::kCPU, at::kDouble).t());
        at::Tensor got = out.to(at::kCPU, at::kDouble);
        const bool bf16 = dtype == at::kBFloat16;
        if (zero_softmax) {
          const double err = (got - linear).abs().max().item<double>(), scale = linear.abs().max().item<double>();
          EXPECT_LE(err, (bf16 ? 1.5e-2 : 3e-3) * scale) << what;
        } else {
          EXPECT_TRUE(close(got, softmax_out.to(at::kCPU, at::kDouble) + linear, bf16 ? 2e-2 : 5e-3)) << what;
        }
        // The last row of the mask lists every block: its tokens keep O_s exactly.
        const int64_t last = (NQ - 1) * 128;
        EXPECT_TRUE(at::equal(out[s.B - 1].narrow(0, last, s.S - last).select(1, s.H - 1),
                              softmax_out[s.B - 1].narrow(0, last, s.S - last).select(1, s.H - 1)))
            << what;
        EXPECT_TRUE(buffer.narrow(1, s.S, rows - s.S).eq(7).all().item<bool>()) << what;
      }
}

// The combine in the block-sparse kernel's epilogue (Hopper, head dim 128): O_s + O_l·Wᵀ against
// the fp64 oracles of both branches, and against the unfused kernels, on partial and single query
// blocks, both key block sizes, B, H > 1, a row that lists no block (the whole row is linear)
// and one that lists every block (O_s alone).
TEST(ComplementLinearAttentionCuda, FusedCombineMatchesReferenceAndUnfused) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const Shape shapes[] = {{2, 300, 3, 128, {128, 64}}, {1, 100, 2, 128, {128, 128}}, {1, 128, 1, 128, {128, 64}},
                          {2, 389, 2, 128, {128, 128}}};
  for (const Shape& s : shapes)
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      const std::string what = describe(s, dtype);
      const auto opts = at::dtype(dtype).device(at::kCUDA);
      at::Tensor q = at::randn({s.B, s.S, s.H, s.D}, opts), k = at::randn({s.B, s.S, s.H, s.D}, opts),
                 v = at::randn({s.B, s.S, s.H, s.D}, opts);
      at::Tensor w = at::randn({s.D, s.D}, at::dtype(at::kFloat).device(at::kCUDA)) / std::sqrt(double(s.D));
      BlockCsr csr = mask_to_csr(critical_mask(s).cuda());
      if (!block_sparse_attention_uses_kernel(q, k, v, s.blocks)) GTEST_SKIP() << "not a Hopper GPU";
      ASSERT_TRUE(sparse_linear_attention_fuses(q, k, v, s.blocks, w)) << what;
      std::vector<std::string> stages;
      AttentionOutput got = sparse_linear_attention(q, k, v, csr, s.blocks, w, /*fused=*/true,
                                                    [&](const char* stage) { stages.emplace_back(stage); });
      EXPECT_EQ(stages, (std::vector<std::string>{"summaries", "complement map", "complement GEMM",
                                                  "attention + combine"}))
          << what;
      AttentionOutput unfused = sparse_linear_attention(q, k, v, csr, s.blocks, w, /*fused=*/false);

      auto f64 = [](const at::Tensor& x) { return x.to(at::kCPU, at::kDouble); };
      AttentionOutput softmax = block_sparse_attention_reference(f64(q), f64(k), f64(v), csr, s.blocks);
      at::Tensor linear = at::matmul(complement_linear_attention_reference(f64(q), f64(k), f64(v), csr, s.blocks),
                                     f64(w).t());
      const bool bf16 = dtype == at::kBFloat16;
      EXPECT_TRUE(close(got.out, softmax.out + linear, bf16 ? 2e-2 : 5e-3)) << what;
      // The unfused path rounds O_s before adding; the fused one rounds once.
      EXPECT_TRUE(close(got.out, unfused.out, bf16 ? 2e-2 : 3e-3)) << what;
      EXPECT_TRUE(at::equal(got.lse, unfused.lse)) << what;
      // The first row lists no block (unless it is also the last): linear attention alone, held to
      // a bound relative to its largest value.
      if (s.B * s.H * csr.num_q_blocks > 1) {
        at::Tensor first = got.out[0].narrow(0, 0, std::min<int64_t>(128, s.S)).select(1, 0);
        at::Tensor first_want = linear[0].narrow(0, 0, std::min<int64_t>(128, s.S)).select(1, 0);
        EXPECT_LE((f64(first) - first_want).abs().max().item<double>(),
                  (bf16 ? 1.5e-2 : 3e-3) * first_want.abs().max().item<double>())
            << what;
      }
      // The last row lists every block: its tokens get O_s exactly as the kernel alone gives it.
      const int64_t last = (csr.num_q_blocks - 1) * 128;
      AttentionOutput alone = block_sparse_attention(q, k, v, csr, s.blocks);
      EXPECT_TRUE(at::equal(got.out[s.B - 1].narrow(0, last, s.S - last).select(1, s.H - 1),
                            alone.out[s.B - 1].narrow(0, last, s.S - last).select(1, s.H - 1)))
          << what;
    }
  // Head dim 64 and fp32 stay unfused.
  const auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q64 = at::randn({1, 300, 2, 64}, opts), w64 = at::zeros({64, 64}, at::dtype(at::kFloat).device(at::kCUDA));
  EXPECT_FALSE(sparse_linear_attention_fuses(q64, q64, q64, {128, 64}, w64));
  at::Tensor q32 = at::randn({1, 300, 2, 128}, at::dtype(at::kFloat).device(at::kCUDA));
  EXPECT_FALSE(sparse_linear_attention_fuses(q32, q32, q32, {128, 64}, at::zeros({128, 128}, q32.options())));
}

// The summaries taken apart for a planner: k's block means as block_mean_pool's reference gives
// them (partial last blocks averaged over their own tokens), and the fused run given those
// summaries bit for bit the run that makes its own, without the summaries stage.
TEST(ComplementLinearAttentionCuda, SummariesForAPlannerCarryKBlockMeans) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const Shape shapes[] = {{2, 300, 3, 128, {128, 64}}, {1, 100, 2, 128, {128, 128}}, {1, 64, 1, 128, {128, 64}},
                          {2, 389, 2, 128, {128, 128}}};
  for (const Shape& s : shapes)
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      const std::string what = describe(s, dtype);
      const auto opts = at::dtype(dtype).device(at::kCUDA);
      at::Tensor q = at::randn({s.B, s.S, s.H, s.D}, opts), k = at::randn({s.B, s.S, s.H, s.D}, opts) + 0.5,
                 v = at::randn({s.B, s.S, s.H, s.D}, opts);
      at::Tensor w = at::randn({s.D, s.D}, at::dtype(at::kFloat).device(at::kCUDA)) / std::sqrt(double(s.D));
      if (!block_sparse_attention_uses_kernel(q, k, v, s.blocks)) GTEST_SKIP() << "not a Hopper GPU";
      const auto taken = fused_key_block_summaries(q, k, v, s.blocks, w);
      ASSERT_TRUE(taken.has_value()) << what;
      const int64_t NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
      ASSERT_EQ(taken->k_means.sizes(), at::IntArrayRef({s.B, NK, s.H, s.D})) << what;
      EXPECT_EQ(taken->k_means.scalar_type(), dtype) << what;
      // One rounding to the dtype apart (the summation orders differ).
      EXPECT_TRUE(close(taken->k_means, block_mean_pool_reference(k.cpu(), s.blocks.k_block),
                        dtype == at::kBFloat16 ? 8e-3 : 1e-3))
          << what;

      BlockCsr csr = mask_to_csr(critical_mask(s).cuda());
      std::vector<std::string> stages;
      AttentionOutput given = sparse_linear_attention(q, k, v, csr, s.blocks, w, /*fused=*/true,
                                                      [&](const char* stage) { stages.emplace_back(stage); },
                                                      taken->summaries);
      EXPECT_EQ(stages, (std::vector<std::string>{"complement map", "complement GEMM", "attention + combine"})) << what;
      AttentionOutput own = sparse_linear_attention(q, k, v, csr, s.blocks, w);
      EXPECT_TRUE(at::equal(given.out, own.out)) << what;
      EXPECT_TRUE(at::equal(given.lse, own.lse)) << what;

      // Summaries of another shape, or given where the fused path does not run, are refused.
      EXPECT_TRUE(testing_support::throws_with<c10::Error>([&] {
        sparse_linear_attention(q, k, v, csr, s.blocks, w, true, nullptr, taken->summaries.narrow(3, 0, s.D));
      }, {"summaries", "contiguous"})) << what;
      EXPECT_TRUE(testing_support::throws_with<c10::Error>([&] {
        sparse_linear_attention(q, k, v, csr, s.blocks, w, /*fused=*/false, nullptr, taken->summaries);
      }, {"summaries", "fused path"})) << what;
    }
  // Where the fused path does not run, there is nothing to take apart.
  at::Tensor q64 = at::randn({1, 300, 2, 64}, at::dtype(at::kBFloat16).device(at::kCUDA));
  const at::Tensor w64 = at::zeros({64, 64}, q64.options().dtype(at::kFloat));
  EXPECT_FALSE(fused_key_block_summaries(q64, q64, q64, {128, 64}, w64));
  at::Tensor q32 = at::randn({1, 300, 2, 128}, at::dtype(at::kFloat).device(at::kCUDA));
  EXPECT_FALSE(fused_key_block_summaries(q32, q32, q32, {128, 64}, at::zeros({128, 128}, q32.options())));
  at::Tensor cpu = at::randn({1, 300, 2, 128}, at::kBFloat16);
  EXPECT_FALSE(fused_key_block_summaries(cpu, cpu, cpu, {128, 64}, at::zeros({128, 128})));
}

TEST(ComplementLinearAttentionCuda, KernelsTakeHalfInputsOutsideAutograd) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::randn({1, 300, 2, 64}, opts), k = at::randn_like(q), v = at::randn_like(q),
             out = at::randn_like(q), w = at::randn({64, 64}, at::dtype(at::kFloat).device(at::kCUDA));
  const BlockShape blocks{128, 64};
  EXPECT_TRUE(projected_complement_linear_attention_uses_kernel(out, q, k, v, blocks, w));
  EXPECT_TRUE(projected_complement_linear_attention_uses_kernel(out.to(at::kHalf), q.to(at::kHalf), k.to(at::kHalf),
                                                                v.to(at::kHalf), blocks, w));
  auto f32 = [](const at::Tensor& x) { return x.to(at::kFloat); };
  EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(f32(out), f32(q), f32(k), f32(v), blocks, w));
  EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(f32(out), q, k, v, blocks, w));
  EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(out, q, k, v, {64, 64}, w));
  EXPECT_FALSE(
      projected_complement_linear_attention_uses_kernel(out.cpu(), q.cpu(), k.cpu(), v.cpu(), blocks, w.cpu()));
  at::Tensor q_grad = q.detach().requires_grad_(), w_grad = w.detach().requires_grad_();
  EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(out, q_grad, k, v, blocks, w));
  EXPECT_FALSE(projected_complement_linear_attention_uses_kernel(out, q, k, v, blocks, w_grad));
  at::NoGradGuard no_grad;
  EXPECT_TRUE(projected_complement_linear_attention_uses_kernel(out, q_grad, k, v, blocks, w_grad));
}

}  // namespace
}  // namespace ditkit
