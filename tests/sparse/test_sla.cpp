// `sla`: its plan is top-k's (centring k does not change a row's ranking), untuned it is top-k
// sparse attention, tuned it adds the projected linear branch over exactly the other blocks; its
// autograd path has the inference path's forward and the gradients of finite differences; its
// projections are shared per key across rules and load from tensors by key; plan_and_run() is
// plan() then run(), on the GPU's fused path too.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "kernels/block_sparse_attention.h"
#include "kernels/complement_linear_attention.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"
#include "tests/sparse/method_test_support.h"

namespace ditkit {
namespace {

using testing_support::close;
using testing_support::method;

AttentionContext layer(int index) {
  AttentionContext ctx;
  ctx.layer = index;
  return ctx;
}

// 700 tokens: 6 query blocks (the last partial), 11 key blocks of 64 (the last partial).
const int64_t kB = 2, kS = 700, kH = 3, kD = 16;

TEST(MethodsSla, PlanIsTopkAndUntunedRunIsTopkSparseAttention) {
  at::Tensor q = at::randn({kB, kS, kH, kD}), k = at::randn({kB, kS, kH, kD}) + 0.5, v = at::randn({kB, kS, kH, kD});
  auto sla = method("sla:keep=0.2");
  Plan plan = sla->plan(q, k, layer(0));
  ASSERT_TRUE(plan.linear_projection.defined());
  EXPECT_TRUE(at::equal(plan.linear_projection, at::zeros({kD, kD})));
  EXPECT_TRUE(plan.csr.row_offsets.diff().eq(3).all().item<bool>());  // ceil(0.2 · 11)
  auto topk = method("topk:k=3");
  Plan want = topk->plan(q, k, layer(0));
  EXPECT_TRUE(at::equal(plan.csr.row_offsets, want.csr.row_offsets));
  EXPECT_TRUE(at::equal(plan.csr.col_indices, want.csr.col_indices));
  EXPECT_TRUE(close(sla->run(q, k, v, plan).out, topk->run(q, k, v, want).out, 1e-6));
}

TEST(MethodsSla, TunedRunAddsTheProjectedComplementBranch) {
  for (const std::string recipe : {"sla:keep=0.3", "sla:keep=0.1:kblock=128:diag=0", "sla:keep=0.2:kblock=32:diag=0",
                                   "sla:keep=0.2:qblock=64"}) {
    at::Tensor q = at::randn({kB, kS, kH, kD}), k = at::randn({kB, kS, kH, kD}), v = at::randn({kB, kS, kH, kD});
    auto sla = method(recipe);
    at::Tensor w = at::randn({kD, kD}) * 0.3;
    EXPECT_EQ(sla->load_weights({{"blocks.2.attn1.sla_proj.weight", w}, {"blocks.2.attn1.to_q.weight", w}}),
              std::vector<std::string>{"blocks.2.attn1.sla_proj.weight"});
    Plan plan = sla->plan(q, k, layer(2));
    AttentionOutput got = sla->run(q, k, v, plan);
    AttentionOutput sparse = block_sparse_attention_reference(q, k, v, plan.csr, plan.blocks);
    at::Tensor linear = complement_linear_attention_reference(q, k, v, plan.csr, plan.blocks);
    at::Tensor want = sparse.out.to(at::kDouble) + at::matmul(linear.to(at::kDouble), w.to(at::kDouble).t());
    EXPECT_TRUE(close(got.out, want, 1e-5)) << recipe;
    EXPECT_TRUE(close(got.lse, sparse.lse, 1e-5)) << recipe;  // the softmax branch's
    // Another layer has no tuned weight: top-k attention there.
    EXPECT_TRUE(at::equal(sla->plan(q, k, layer(1)).linear_projection, at::zeros({kD, kD})));
  }
}

// Training's path (autograd records) against the inference path, and its gradients against
// central finite differences in fp64 with the plan held fixed (it is discrete).
TEST(MethodsSla, AutogradPathMatchesInferenceAndFiniteDifferences) {
  auto sla = method("sla:keep=0.3");
  at::Tensor w = at::randn({kD, kD}) * 0.5;
  sla->load_weights({{"blocks.0.attn1.sla_proj.weight", w}});
  {
    at::Tensor q = at::randn({kB, kS, kH, kD}), k = at::randn({kB, kS, kH, kD}), v = at::randn({kB, kS, kH, kD});
    Plan plan = sla->plan(q, k, layer(0));
    at::Tensor inference = sla->run(q, k, v, plan).out;
    at::Tensor qg = q.clone().requires_grad_(true);
    at::Tensor trained = sla->run(qg, k, v, plan).out;
    ASSERT_TRUE(trained.requires_grad());
    EXPECT_TRUE(close(trained, inference, 1e-5));
  }
  const int64_t B = 1, S = 150, H = 2, D = 8;  // 2 query blocks, 3 key blocks, both partial
  at::Tensor q = at::randn({B, S, H, D}, at::kDouble), k = at::randn({B, S, H, D}, at::kDouble),
             v = at::randn({B, S, H, D}, at::kDouble);
  Plan plan = method("sla:keep=0.4")->plan(q, k, layer(0));  // 2 of 3 key blocks per row
  plan.linear_projection = at::randn({D, D}, at::kDouble);
  at::Tensor weights_out = at::randn({B, S, H, D}, at::kDouble);
  std::vector<at::Tensor> inputs{q, k, v, plan.linear_projection};
  // Always through the autograd path (its inputs require grad): the inference path on the CPU
  // computes in fp32, too coarse for finite differences.
  auto loss = [&](const std::vector<at::Tensor>& x) {
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : x) leaves.push_back(t.detach().requires_grad_(true));
    Plan p = plan;
    p.linear_projection = leaves[3];
    return std::make_pair((execute_plan(leaves[0], leaves[1], leaves[2], p).out * weights_out).sum(), leaves);
  };
  auto [total, leaves] = loss(inputs);
  total.backward();
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    at::Tensor grad = leaves[i].grad();
    ASSERT_TRUE(grad.defined()) << "input " << i;
    EXPECT_GT(grad.abs().max().item<double>(), 0) << "input " << i;
    at::Tensor flat = inputs[i].view(-1);
    for (int64_t n : {int64_t{0}, flat.numel() / 3, flat.numel() / 2, flat.numel() - 1}) {
      std::vector<at::Tensor> plus = inputs, minus = inputs;
      plus[i] = inputs[i].clone(), minus[i] = inputs[i].clone();
      plus[i].view(-1)[n] += eps;
      minus[i].view(-1)[n] -= eps;
      const double numeric = (loss(plus).first - loss(minus).first).item<double>() / (2 * eps);
      EXPECT_NEAR(grad.view(-1)[n].item<double>(), numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << "input " << i << " element " << n;
    }
  }
}

TEST(MethodsSla, WeightsAreOnePerKeyAcrossRulesAndLoadByKey) {
  RecipeAttention attn(parse_recipe("sla:keep=0.1@steps<2,reuse:inner=(sla:keep=0.2)@layers=1..2@steps>=2,sla",
                                    attention_method_specs()));
  auto weights = attn.weights(3, kD, at::kCPU);
  ASSERT_EQ(weights.size(), 3u);
  EXPECT_EQ(weights[0].first, "blocks.0.attn1.sla_proj.weight");
  EXPECT_EQ(weights[2].first, "blocks.2.attn1.sla_proj.weight");
  at::Tensor q = at::randn({1, 200, 2, kD}), k = at::randn({1, 200, 2, kD});
  // Every rule that runs layer 1 computes with the one tensor the trainer sees.
  for (int step : {0, 5}) {
    AttentionContext ctx = layer(1);
    ctx.step = step;
    ctx.num_steps = 10;
    EXPECT_TRUE(attn.method_for(ctx).plan(q, k, ctx).linear_projection.is_same(weights[1].second)) << step;
  }
  at::Tensor tuned = at::randn({kD, kD});
  EXPECT_EQ(attn.load_weights({{"blocks.1.attn1.sla_proj.weight", tuned}, {"other", tuned}}),
            std::vector<std::string>{"blocks.1.attn1.sla_proj.weight"});
  AttentionContext ctx = layer(1);
  ctx.num_steps = 10;
  EXPECT_TRUE(at::equal(attn.method_for(ctx).plan(q, k, ctx).linear_projection, tuned));
  // Wrong shapes are refused, naming the weight.
  EXPECT_THROW(attn.load_weights({{"blocks.0.attn1.sla_proj.weight", at::zeros({kD, kD + 1})}}), c10::Error);
  auto sla = method("sla");
  sla->load_weights({{"blocks.0.attn1.sla_proj.weight", at::zeros({kD + 1, kD + 1})}});
  try {
    sla->plan(q, k, layer(0));
    FAIL() << "a head-dim mismatch must throw";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.attn1.sla_proj.weight"), std::string::npos) << e.what();
  }
}

// plan_and_run(), which the sampler calls, is plan() then run(): here on the CPU, where it is
// exactly those calls (the GPU test below covers the fused path, which shares a pass).
TEST(MethodsSla, PlanAndRunIsPlanThenRun) {
  at::Tensor q = at::randn({kB, kS, kH, kD}), k = at::randn({kB, kS, kH, kD}), v = at::randn({kB, kS, kH, kD});
  auto sla = method("sla:keep=0.3");
  sla->load_weights({{"blocks.0.attn1.sla_proj.weight", at::randn({kD, kD}) * 0.3}});
  Plan made;
  AttentionOutput got = sla->plan_and_run(q, k, v, layer(0), made);
  Plan plan = sla->plan(q, k, layer(0));
  EXPECT_TRUE(at::equal(made.csr.col_indices, plan.csr.col_indices));
  EXPECT_TRUE(made.linear_projection.is_same(plan.linear_projection));
  EXPECT_TRUE(at::equal(got.out, sla->run(q, k, v, plan).out));
}

// Key blocks whose scores lie far apart (k's block means step along q's mean direction in a
// shuffled order per head), so that the plan cannot turn on one rounding of a block mean.
at::Tensor keys_with_distinct_scores(int64_t B, int64_t S, int64_t H, int64_t D, int64_t kblock,
                                     const at::Tensor& direction) {
  const int64_t NK = (S + kblock - 1) / kblock;
  std::vector<at::Tensor> ranks;
  for (int64_t i = 0; i < B * H; ++i) ranks.push_back(at::randperm(NK).to(at::kFloat));
  at::Tensor step = at::stack(ranks).view({B, H, NK}).permute({0, 2, 1}).repeat_interleave(kblock, 1).narrow(1, 0, S);
  return at::randn({B, S, H, D}) * 0.2 + step.unsqueeze(-1) * direction;
}

// On the GPU's fused path plan_and_run() plans from the summaries kernel's k block means and runs
// with its summaries: the plan is plan()'s and the output run()'s, bit for bit.
TEST(MethodsSlaCuda, PlanAndRunOnTheFusedPathIsPlanThenRun) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const int64_t D = 128;
  at::Tensor u = at::randn({D});
  u = u / u.norm() * 4;
  for (const std::string recipe : {"sla:keep=0.2", "sla:keep=0.3:kblock=128:diag=0"}) {
    auto sla = method(recipe);
    sla->load_weights({{"blocks.0.attn1.sla_proj.weight", at::randn({D, D}) * 0.1}});
    const int64_t kblock = recipe.find("kblock=128") == std::string::npos ? 64 : 128;
    const auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
    at::Tensor q = (at::randn({kB, kS, kH, D}) * 0.2 + u).to(opts);
    at::Tensor k = keys_with_distinct_scores(kB, kS, kH, D, kblock, u).to(opts), v = at::randn({kB, kS, kH, D}, opts);
    if (!block_sparse_attention_uses_kernel(q, k, v, {128, kblock})) GTEST_SKIP() << "not a Hopper GPU";
    Plan made;
    AttentionOutput got = sla->plan_and_run(q, k, v, layer(0), made);
    Plan plan = sla->plan(q, k, layer(0));
    ASSERT_TRUE(sparse_linear_attention_fuses(q, k, v, plan.blocks, plan.linear_projection)) << recipe;
    EXPECT_TRUE(at::equal(made.csr.row_offsets, plan.csr.row_offsets)) << recipe;
    EXPECT_TRUE(at::equal(made.csr.col_indices, plan.csr.col_indices)) << recipe;
    AttentionOutput want = sla->run(q, k, v, plan);
    EXPECT_TRUE(at::equal(got.out, want.out)) << recipe;
    EXPECT_TRUE(at::equal(got.lse, want.lse)) << recipe;
  }
}

TEST(MethodsSlaCuda, TunedRunMatchesReferencesOnTheGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::Tensor q = at::randn({1, kS, kH, 64}), k = at::randn({1, kS, kH, 64}), v = at::randn({1, kS, kH, 64});
  at::Tensor w = at::randn({64, 64}) * 0.1;
  // Key blocks of 32 and query blocks of 64 take no kernel of the fused path: the fallbacks, on the GPU.
  for (const auto& [recipe, dtype] : {std::pair{"sla:keep=0.2", at::kFloat}, std::pair{"sla:keep=0.2", at::kBFloat16},
                                      std::pair{"sla:keep=0.2:kblock=32:diag=0", at::kBFloat16},
                                      std::pair{"sla:keep=0.2:qblock=64", at::kBFloat16}}) {
    auto sla = method(recipe);
    sla->load_weights({{"blocks.0.attn1.sla_proj.weight", w}});
    at::Tensor qc = q.cuda().to(dtype), kc = k.cuda().to(dtype), vc = v.cuda().to(dtype);
    Plan plan = sla->plan(qc, kc, layer(0));
    EXPECT_EQ(plan.linear_projection.device().type(), at::kCUDA);
    at::Tensor got = sla->run(qc, kc, vc, plan).out;
    BlockCsr csr{plan.csr.row_offsets.cpu(), plan.csr.col_indices.cpu(), plan.csr.batch, plan.csr.heads,
                 plan.csr.num_q_blocks, plan.csr.num_k_blocks};
    at::Tensor qr = qc.cpu(), kr = kc.cpu(), vr = vc.cpu();
    at::Tensor want = block_sparse_attention_reference(qr, kr, vr, csr, plan.blocks).out.to(at::kDouble) +
                      at::matmul(complement_linear_attention_reference(qr, kr, vr, csr, plan.blocks).to(at::kDouble),
                                 w.to(at::kDouble).t());
    EXPECT_TRUE(close(got, want, dtype == at::kFloat ? 2e-3 : 3e-2)) << recipe << " " << dtype;
  }
}

}  // namespace
}  // namespace ditkit
