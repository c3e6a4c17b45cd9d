// `tile` (sparse/tile.cpp): its plan is the inner method's over the tiled token order, its output
// masked attention in the original order token by token (and sla's projected branch over the same
// order), plan_and_run() is plan() then run(), gradients pass through the reordering, and inner
// methods that place blocks by the frame-major layout are refused by name.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/block_csr.h"
#include "kernels/block_sparse_attention.h"
#include "kernels/complement_linear_attention.h"
#include "kernels/dense_attention.h"
#include "kernels/token_permute.h"
#include "sparse/attention_method.h"
#include "tests/model_test_support.h"
#include "tests/sparse/method_test_support.h"

namespace ditkit {
namespace {

using testing_support::close;
using testing_support::masked_attention;
using testing_support::method;
using testing_support::throws_with;

AttentionContext on_grid(const LatentGrid& g, int layer = 0) {
  AttentionContext ctx;
  ctx.grid = g;
  ctx.layer = layer;
  return ctx;
}

// Grids whose sides are not multiples of the tile's, one that fits in one block, and the shipped
// model's 8x16x16 (each key block of 64 exactly one 4x4x4 tile).
const LatentGrid kGrids[] = {{3, 7, 9}, {8, 16, 16}, {1, 5, 6}, {5, 6, 11}};

TEST(MethodsTile, PlansTheInnerMethodOverTilesAndRunsMaskedAttentionInTheOriginalOrder) {
  at::manual_seed(21);
  for (const LatentGrid& g : kGrids)
    for (const std::string inner : {"topk:k=2", "topk:k=1:diag=0", "topk:mass=0.5:kblock=128"}) {
      const std::string recipe = "tile:t=2:h=3:w=4:inner=(" + inner + ")";
      SCOPED_TRACE(recipe + " on " + std::to_string(g.frames) + "x" + std::to_string(g.height) + "x" +
                   std::to_string(g.width));
      const int64_t B = 2, S = g.tokens(), H = 3, D = 16;
      at::Tensor q = at::randn({B, S, H, D}), k = at::randn({B, S, H, D}), v = at::randn({B, S, H, D});
      auto m = method(recipe);
      Plan plan = m->plan(q, k, on_grid(g));
      const at::Tensor perm = tile_permutation(g.frames, g.height, g.width, 2, 3, 4);
      ASSERT_TRUE(at::equal(plan.permutation, perm));
      ASSERT_TRUE(at::equal(plan.inverse_permutation, invert_permutation(perm)));
      Plan want = method(inner)->plan(permute_tokens_reference(q, perm), permute_tokens_reference(k, perm), {});
      ASSERT_TRUE(at::equal(csr_to_mask(plan.csr), csr_to_mask(want.csr)));

      // Token a sits at tiled position pos[a]; it may attend to b when their blocks are kept.
      const at::Tensor pos = invert_permutation(perm);
      const at::Tensor keep = csr_to_mask(plan.csr)
                                  .index_select(2, pos.div(plan.blocks.q_block, "floor"))
                                  .index_select(3, pos.div(plan.blocks.k_block, "floor"));  // [B, H, S, S]
      AttentionOutput want_out = masked_attention(q, k, v, keep);
      AttentionOutput got = m->run(q, k, v, plan);
      EXPECT_TRUE(close(got.out, want_out.out, 1e-5));
      EXPECT_TRUE(close(got.lse, want_out.lse, 1e-5));
    }
}

// sla inside: its tuned projection is the one `tile` hands out and loads, and the output is sla's
// softmax and projected linear branches over the tiled order, put back.
TEST(MethodsTile, SlaInsideAddsItsProjectedBranchOverTheTiledOrder) {
  at::manual_seed(22);
  const LatentGrid g{5, 6, 11};
  const int64_t B = 2, S = g.tokens(), H = 3, D = 16;
  at::Tensor q = at::randn({B, S, H, D}), k = at::randn({B, S, H, D}), v = at::randn({B, S, H, D});
  auto m = method("tile:inner=(sla:keep=0.3:diag=0)");
  ASSERT_EQ(m->weights({1}, D, at::kCPU).size(), 1u);
  EXPECT_EQ(m->weights({1}, D, at::kCPU)[0].first, "blocks.1.attn1.sla_proj.weight");
  at::Tensor w = at::randn({D, D}) * 0.3;
  EXPECT_EQ(m->load_weights({{"blocks.1.attn1.sla_proj.weight", w}}),
            std::vector<std::string>{"blocks.1.attn1.sla_proj.weight"});
  Plan plan = m->plan(q, k, on_grid(g, 1));
  EXPECT_TRUE(plan.linear_projection.is_same(w));
  const at::Tensor perm = tile_permutation(g.frames, g.height, g.width, 4, 4, 4);
  const at::Tensor qp = permute_tokens_reference(q, perm), kp = permute_tokens_reference(k, perm),
                   vp = permute_tokens_reference(v, perm);
  at::Tensor want = block_sparse_attention_reference(qp, kp, vp, plan.csr, plan.blocks).out.to(at::kDouble) +
                    at::matmul(complement_linear_attention_reference(qp, kp, vp, plan.csr, plan.blocks).to(at::kDouble),
                               w.to(at::kDouble).t());
  EXPECT_TRUE(close(m->run(q, k, v, plan).out, permute_tokens_reference(want, invert_permutation(perm)), 1e-5));
}

TEST(MethodsTile, PlanAndRunIsPlanThenRun) {
  at::manual_seed(23);
  const LatentGrid g{3, 7, 9};
  at::Tensor q = at::randn({1, g.tokens(), 2, 16}), k = at::randn({1, g.tokens(), 2, 16}),
             v = at::randn({1, g.tokens(), 2, 16});
  for (const std::string recipe : {"tile:inner=(sla:keep=0.3)", "tile:t=1:inner=(reuse:inner=(topk:k=2))",
                                   "tile:inner=(dense)"}) {
    auto m = method(recipe);
    m->load_weights({{"blocks.0.attn1.sla_proj.weight", at::randn({16, 16}) * 0.3}});
    Plan made;
    AttentionOutput got = m->plan_and_run(q, k, v, on_grid(g), made);
    Plan plan = m->plan(q, k, on_grid(g));
    EXPECT_EQ(made.dense, plan.dense) << recipe;
    EXPECT_EQ(made.permutation.defined(), !plan.dense) << recipe;
    if (!plan.dense) {
      EXPECT_TRUE(at::equal(made.csr.col_indices, plan.csr.col_indices)) << recipe;
    }
    AttentionOutput want = m->run(q, k, v, plan);
    EXPECT_TRUE(close(got.out, want.out, 1e-6)) << recipe;
    EXPECT_TRUE(close(got.out, m->run(q, k, v, made).out, 1e-6)) << recipe;
    if (plan.dense) {
      EXPECT_TRUE(close(got.out, dense_attention(q, k, v).out, 1e-5)) << recipe;
    }
  }
}

// Every block kept: attention over any order is dense attention, gradients included, so the
// gradients that come back through the two gathers are dense attention's.
TEST(MethodsTile, GradientsPassThroughTheReordering) {
  at::manual_seed(24);
  const LatentGrid g{3, 7, 9};
  const int64_t S = g.tokens();
  at::Tensor q = at::randn({2, S, 2, 8}, at::kDouble), k = at::randn({2, S, 2, 8}, at::kDouble),
             v = at::randn({2, S, 2, 8}, at::kDouble), g_out = at::randn({2, S, 2, 8}, at::kDouble);
  auto grads = [&](const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& f) {
    std::vector<at::Tensor> leaves{q.clone().requires_grad_(true), k.clone().requires_grad_(true),
                                   v.clone().requires_grad_(true)};
    (f(leaves[0], leaves[1], leaves[2]) * g_out).sum().backward();
    return std::vector<at::Tensor>{leaves[0].grad(), leaves[1].grad(), leaves[2].grad()};
  };
  auto m = method("tile:t=2:h=2:w=3:inner=(topk:k=1000)");
  auto got = grads([&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    Plan made;
    return m->plan_and_run(a, b, c, on_grid(g), made).out;
  });
  auto want = grads([](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
    return dense_attention(a, b, c).out;
  });
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].defined()) << "input " << i;
    EXPECT_TRUE(close(got[i], want[i], 1e-9)) << "input " << i;
  }
}

TEST(MethodsTile, BadRecipesAndGridsAreNamed) {
  for (const auto& [recipe, words] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"tile", {"'inner'", "tile"}},
           {"tile:inner=(paro:order=hwf)", {"'inner'", "'paro'", "topk, sla"}},
           {"tile:inner=(reuse:inner=(window3d))", {"'inner'", "'window3d'"}},
           {"tile:t=0:inner=(topk:k=2)", {"'t'"}}})
    EXPECT_TRUE(throws_with<std::invalid_argument>([&] { method(recipe); }, words)) << recipe;
  auto m = method("tile:inner=(topk:k=2)");
  at::Tensor q = at::randn({1, 100, 2, 16});
  EXPECT_TRUE(throws_with<c10::Error>([&] { m->plan(q, q, on_grid({3, 7, 9})); }, {"tile", "3x7x9", "189", "100"}));
}

}  // namespace
}  // namespace ditkit
