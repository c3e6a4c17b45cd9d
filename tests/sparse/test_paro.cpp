// `paro` (sparse/paro.cpp): its per-head token orders against orders written out by nested loops,
// its blocks against topk's selection recomputed by the kernel references over those orders, its
// output against masked attention token by token, and its `order` parameter's errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "kernels/block_sparse_attention.h"
#include "kernels/token_permute.h"
#include "sparse/attention_method.h"
#include "sparse/paro.h"
#include "tests/model_test_support.h"
#include "tests/sparse/method_test_support.h"

namespace ditkit {
namespace {

using testing_support::close;
using testing_support::masked_attention;
using testing_support::method;
using testing_support::nested_loop_order;

using testing_support::throws_with;

std::string grid_name(const LatentGrid& g) {
  return std::to_string(g.frames) + "x" + std::to_string(g.height) + "x" + std::to_string(g.width);
}

TEST(MethodsParo, OrderValueRoundTrips) {
  EXPECT_EQ(paro_order_value({"hwf", "hwf", "hwf"}), "hwf");
  EXPECT_EQ(paro_order_value({"fhw", "whf"}), "fhw.whf");
  EXPECT_EQ(parse_paro_order("fhw.whf.hfw"), (std::vector<std::string>{"fhw", "whf", "hfw"}));
  EXPECT_EQ(parse_paro_order("wfh"), (std::vector<std::string>{"wfh"}));
  EXPECT_EQ(kAxisOrders.size(), 6u);
}

// Grids whose sides are not multiples of anything, one that fits in one block, and per-head and
// shared orders: the plan's tokens are the nested-loop orders, its blocks topk's selection over
// them (kernel references in fp64), its output masked attention token by token.
TEST(MethodsParo, RunsTopksBlocksOverEachHeadsOrderOnAwkwardGrids) {
  at::manual_seed(11);
  float sparsest = 1;
  for (const LatentGrid& g : {LatentGrid{3, 7, 9}, LatentGrid{5, 6, 11}, LatentGrid{2, 3, 5}, LatentGrid{1, 13, 17}}) {
    for (auto [recipe, orders, selection, k_block] : std::vector<std::tuple<std::string, std::vector<std::string>, BlockSelection, int64_t>>{
             {"paro:order=whf.fhw.hfw:k=2", {"whf", "fhw", "hfw"}, {2, 0, true, 0}, 64},
             {"paro:order=hwf:mass=0.5:kblock=128", {"hwf", "hwf", "hwf"}, {0, 0.5, true, 0}, 128},
             {"paro:order=wfh.fwh.wfh:mass=0.7:diag=0:first=1", {"wfh", "fwh", "wfh"}, {0, 0.7, false, 1}, 64}}) {
      SCOPED_TRACE(recipe + " on " + grid_name(g));
      const int64_t B = 2, S = g.tokens(), H = 3, D = 16;
      at::Tensor q = at::randn({B, S, H, D}), k = at::randn({B, S, H, D}), v = at::randn({B, S, H, D});
      AttentionContext ctx;
      ctx.grid = g;
      auto m = method(recipe);
      Plan plan = m->plan(q, k, ctx);

      std::vector<at::Tensor> per_head;
      for (const std::string& o : orders) per_head.push_back(nested_loop_order(g, o));
      const at::Tensor perm = at::stack(per_head);  // [H, S]
      ASSERT_TRUE(plan.permutation.defined());
      ASSERT_TRUE(at::equal(plan.permutation.expand({H, S}), perm));
      ASSERT_TRUE(at::equal(plan.inverse_permutation.expand({H, S}), invert_permutation(perm)));
      if (orders[0] == orders[1] && orders[1] == orders[2]) {  // shared by all heads: one [S] gather
        EXPECT_EQ(plan.permutation.dim(), 1);
      }

      const BlockShape blocks{128, k_block};
      ASSERT_EQ(plan.blocks.q_block, blocks.q_block);
      ASSERT_EQ(plan.blocks.k_block, blocks.k_block);
      const at::Tensor qp = permute_tokens_reference(q, perm), kp = permute_tokens_reference(k, perm);
      const at::Tensor scores = block_scores_reference(block_mean_pool_reference(qp, 128),
                                                       block_mean_pool_reference(kp, k_block), 1.0 / std::sqrt(double(D)));
      const at::Tensor mask = select_blocks_reference(scores, BlockGeometry{S, 128, k_block}, selection);
      ASSERT_TRUE(at::equal(csr_to_mask(plan.csr), mask));
      sparsest = std::min(sparsest, plan.density(at::kCPU).item<float>());

      // Masked attention in the original token order: token a of head h sits at position pos[h][a].
      const at::Tensor pos = invert_permutation(perm);
      std::vector<at::Tensor> allowed;
      for (int64_t h = 0; h < H; ++h)
        allowed.push_back(mask.select(1, h).index_select(1, pos[h].div(128, "floor")).index_select(2, pos[h].div(k_block, "floor")));
      AttentionOutput want = masked_attention(q, k, v, at::stack(allowed, 1));
      AttentionOutput got = m->run(q, k, v, plan);
      EXPECT_TRUE(close(got.out, want.out, 1e-5));
      EXPECT_TRUE(close(got.lse, want.lse, 1e-5));
    }
  }
  EXPECT_LT(sparsest, 0.7f);
}

// Frame-major for every head is topk itself: no permutation, the same blocks.
TEST(MethodsParo, FrameMajorEverywhereIsTopk) {
  at::manual_seed(12);
  const LatentGrid g{3, 7, 9};
  at::Tensor q = at::randn({1, g.tokens(), 2, 16}), k = at::randn({1, g.tokens(), 2, 16});
  AttentionContext ctx;
  ctx.grid = g;
  for (std::string order : {"fhw", "fhw.fhw"}) {
    Plan plan = method("paro:k=2:order=" + order)->plan(q, k, ctx);
    EXPECT_FALSE(plan.permutation.defined()) << order;
    EXPECT_TRUE(at::equal(csr_to_mask(plan.csr), csr_to_mask(method("topk:k=2")->plan(q, k, ctx).csr))) << order;
  }
}

TEST(MethodsParo, BadOrdersNameTheParameterAndThePart) {
  for (auto [recipe, words] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"paro", {"'order'", "paro"}},
           {"paro:order=fhx", {"'order'", "'fhx'", "head 0", "f, h, w"}},
           {"paro:order=fhw.hw", {"'order'", "'hw'", "head 1 of 'fhw.hw'"}},
           {"paro:order=fhw..hwf", {"'order'", "''", "head 1"}},
           {"paro:order=ffw", {"'order'", "'ffw'"}},
           {"paro:order=FHW", {"'order'", "'FHW'"}},
           {"paro:order=fhwh", {"'order'", "'fhwh'"}},
           {"paro:order=fhw:k=0:mass=0", {"paro needs k > 0 or mass > 0"}},
           {"paro:order=fhw:kblock=96", {"'kblock'"}},
           {"paro:order=fhw:mass=2", {"'mass'"}},
       })
    EXPECT_TRUE(throws_with<RecipeError>([&] { method(recipe); }, words)) << recipe;
  // The JSON form goes through the same checks.
  EXPECT_TRUE(throws_with<RecipeError>(
      [] {
        make_attention_method(parse_recipe_json(R"({"rules": [{"method": "paro", "params": {"order": "hwf.fhq"}}]})",
                                                attention_method_specs())
                                  .rules.at(0));
      },
      {"'order'", "'fhq'", "head 1"}));
  // How many heads a layer has is known only when it runs.
  at::Tensor q = at::randn({1, 189, 4, 8});
  AttentionContext ctx;
  ctx.grid = {3, 7, 9};
  ctx.layer = 5;
  EXPECT_TRUE(throws_with<c10::Error>([&] { method("paro:order=fhw.hwf.whf")->plan(q, q, ctx); },
                                      {"'order' gives 3 axis orders", "layer 5 has 4 heads"}));
  ctx.grid = {3, 7, 8};
  EXPECT_TRUE(throws_with<c10::Error>([&] { method("paro:order=hwf")->plan(q, q, ctx); }, {"3x7x8", "168 tokens"}));
}

}  // namespace
}  // namespace ditkit
