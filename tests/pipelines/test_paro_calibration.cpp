// PARO's calibration (pipelines/paro_calibration.h): on heads designed so that one axis order
// packs their attention into one block it picks that order; on random heads over an awkward grid
// its block counts equal a brute-force count in fp64 for all six orders; its recipe loads and
// runs `paro`; its report holds every order's numbers.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/token_permute.h"
#include "pipelines/paro_calibration.h"
#include "sparse/attention_method.h"
#include "tests/model_test_support.h"
#include "tests/sparse/method_test_support.h"

namespace ditkit {
namespace {

using testing_support::nested_loop_order;

using testing_support::throws_with;

// float64 [B, H]: over the tokens listed in `order`, per query block the fewest key blocks whose
// exact attention mass (summed over the block's rows, divided by its rows) reaches `mass`, as a
// share of all key blocks, averaged over query blocks. Loops and fp64.
at::Tensor brute_force_density(const at::Tensor& q, const at::Tensor& k, const LatentGrid& g, const std::string& order,
                               BlockShape blocks, double mass) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const at::Tensor perm = nested_loop_order(g, order);
  auto heads = [&](const at::Tensor& x) { return x.index_select(1, perm).to(at::kDouble).transpose(1, 2); };
  const at::Tensor p = at::softmax(at::matmul(heads(q), heads(k).transpose(-1, -2)) / std::sqrt(double(D)), -1);
  auto pa = p.accessor<double, 4>();
  const int64_t NQ = (S + blocks.q_block - 1) / blocks.q_block, NK = (S + blocks.k_block - 1) / blocks.k_block;
  at::Tensor out = at::zeros({B, H}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double kept = 0;
      for (int64_t i = 0; i < NQ; ++i) {
        const int64_t r0 = i * blocks.q_block, r1 = std::min(S, r0 + blocks.q_block);
        std::vector<double> m(NK, 0.0);
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < S; ++c) m[c / blocks.k_block] += pa[b][h][r][c] / double(r1 - r0);
        std::sort(m.begin(), m.end(), std::greater<double>());
        double sum = 0;
        int64_t n = 0;
        while (n < NK && sum < mass) sum += m[n++];
        kept += double(n);
      }
      out[b][h] = kept / double(NQ * NK);
    }
  return out;
}

AttentionContext call(const LatentGrid& g, int layer, int step) {
  AttentionContext ctx;
  ctx.grid = g;
  ctx.layer = layer;
  ctx.step = step;
  return ctx;
}

// q = k = a vector per group of tokens, orthogonal across groups, scaled so that a query's score
// is 8 on its own group's keys and 0 elsewhere: each query puts over 95% of its mass on its own
// group. Head 0's groups are rows (same frame and row), head 1's columns through all frames (same
// w), head 2's rows through all frames (same h), head 3's positions through time (same h and w).
TEST(ParoCalibration, PicksTheOrderThatPacksDesignedHeadsIntoTheFewestBlocks) {
  at::manual_seed(21);
  const LatentGrid g{4, 8, 16};  // 512 tokens; blocks of 32: 16 query blocks x 16 key blocks
  const BlockShape blocks{32, 32};
  const int64_t S = g.tokens(), D = 128;
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({D, D}))).t();  // orthonormal rows
  const at::Tensor t = at::arange(S);
  const at::Tensor f = t.div(128, "floor"), h = t.div(16, "floor").remainder(8), w = t.remainder(16);
  std::vector<at::Tensor> per_head;
  const double scale = std::sqrt(8 * std::sqrt(double(D)));
  for (const at::Tensor& group : {f * 8 + h, w, h, h * 16 + w}) per_head.push_back(u.index_select(0, group) * scale);
  const at::Tensor x = at::stack(per_head, 1).unsqueeze(0);  // [1, S, 4, D]

  ParoCalibrator calibrator({0}, blocks, 0.9);
  calibrator.observe(x, x, call(g, 0, 0));
  const at::Tensor density = calibrator.mean_density();
  ASSERT_EQ(density.sizes(), (at::IntArrayRef{1, 4, 6}));
  // A group is contiguous, so one key block (two for head 2's 64-token groups) holds a query
  // block's mass, in: rows fhw, hfw; columns wfh, whf; h-planes hfw, hwf; positions through time
  // hwf, whf (hfw and wfh interleave other positions between two frames). Of two equally good
  // orders the earlier is chosen.
  EXPECT_EQ(best_paro_orders(density)[0], (std::vector<std::string>{"fhw", "wfh", "hfw", "hwf"}));
  const std::vector<double> fewest{1.0 / 16, 1.0 / 16, 2.0 / 16, 1.0 / 16};
  for (int64_t head = 0; head < 4; ++head) EXPECT_DOUBLE_EQ(density[0][head].min().item<double>(), fewest[head]) << head;
  // Frame-major, a column through time touches nearly every key block, a position four (one a frame).
  EXPECT_GE(density[0][1][0].item<double>(), 0.9);
  EXPECT_DOUBLE_EQ(density[0][3][0].item<double>(), 4.0 / 16);
  // The brute force agrees for every order.
  for (size_t o = 0; o < kAxisOrders.size(); ++o)
    EXPECT_TRUE(at::allclose(density.select(2, o)[0], brute_force_density(x, x, g, kAxisOrders[o], blocks, 0.9)[0]))
        << kAxisOrders[o];
}

// Random heads on a grid no block size divides, two batch elements, two layers, three calls of
// which one is at a step not calibrated: each order's mean density is the brute force's.
TEST(ParoCalibration, CountsEveryOrdersBlocksAsTheBruteForceOnAwkwardGrids) {
  at::manual_seed(22);
  const LatentGrid g{3, 5, 7};  // 105 tokens
  const BlockShape blocks{16, 8};
  const double mass = 0.8;
  ParoCalibrator calibrator({0, 2}, blocks, mass);
  std::vector<at::Tensor> sums{at::zeros({2, 6}, at::kDouble), at::zeros({2, 6}, at::kDouble)};  // per layer
  for (int step : {0, 1, 2})
    for (int layer : {0, 1}) {
      const at::Tensor q = at::randn({2, g.tokens(), 2, 8}) * 2, k = at::randn({2, g.tokens(), 2, 8}) * 2;
      calibrator.observe(q, k, call(g, layer, step));
      if (step == 1) continue;
      for (size_t o = 0; o < kAxisOrders.size(); ++o)
        sums[layer].select(1, o) += brute_force_density(q, k, g, kAxisOrders[o], blocks, mass).sum(0);
    }
  EXPECT_EQ(calibrator.samples(), 4);  // 2 steps x 2 batch elements
  EXPECT_EQ(calibrator.grid().tokens(), g.tokens());
  const at::Tensor want = at::stack(sums) / 4.0;
  EXPECT_TRUE(at::allclose(calibrator.mean_density(), want, 1e-9, 1e-9)) << calibrator.mean_density() << want;
}

TEST(ParoCalibration, RecipeLoadsAndRunsParoWithTheOrdersFound) {
  const std::vector<std::vector<std::string>> orders{{"fhw", "hwf"}, {"whf", "whf"}};
  const std::string text = paro_recipe_json(orders, 0.85, 128);
  const Recipe recipe = parse_recipe_json(text, attention_method_specs(), "paro.recipe.json");
  EXPECT_NO_THROW(check_recipe(recipe, 2, 30));
  // Calibrated for two layers: a model with three is not covered.
  EXPECT_TRUE(throws_with<RecipeError>([&] { check_recipe(recipe, 3, 30); }, {"layer 2"}));
  const RecipeRule& first = recipe.rule_for(0, 7, 30);
  EXPECT_EQ(first.method, "paro");
  EXPECT_EQ(first.string_param("order"), "fhw.hwf");
  EXPECT_EQ(first.string_param("kblock"), "128");
  EXPECT_DOUBLE_EQ(first.float_param("mass"), 0.85);
  EXPECT_EQ(recipe.rule_for(1, 0, 30).string_param("order"), "whf");
  at::Tensor q = at::randn({1, 105, 2, 8});
  AttentionContext ctx;
  ctx.grid = {3, 5, 7};
  Plan plan = make_attention_method(first)->plan(q, q, ctx);
  EXPECT_EQ(plan.permutation.sizes(), (at::IntArrayRef{2, 105}));
}

TEST(ParoCalibration, TiesStayFrameMajor) {
  at::Tensor d = at::full({2, 3, 6}, 0.5, at::kDouble);
  d[1][2][4] = 0.25;
  EXPECT_EQ(best_paro_orders(d), (std::vector<std::vector<std::string>>{{"fhw", "fhw", "fhw"}, {"fhw", "fhw", "wfh"}}));
}

TEST(ParoCalibration, ReportHoldsEveryOrdersNumbers) {
  at::manual_seed(23);
  const LatentGrid g{2, 4, 6};
  ParoCalibrator calibrator({1}, {16, 8}, 0.9);
  for (int layer : {0, 1}) {
    const at::Tensor q = at::randn({1, g.tokens(), 3, 8});
    calibrator.observe(q, q, call(g, layer, 1));
  }
  ParoCalibrationRun run;
  run.model = "m";
  run.prompts = {"a", "b"};
  run.recipe_file = "m/paro.recipe.json";
  const nlohmann::json j = nlohmann::json::parse(paro_calibration_report_json(run, calibrator));
  EXPECT_EQ(j["prompts"].size(), 2u);
  EXPECT_EQ(j["mass"], 0.9);
  EXPECT_EQ(j["key_blocks"], 6);
  ASSERT_EQ(j["layers"].size(), 2u);
  const at::Tensor density = calibrator.mean_density();
  const nlohmann::json& head = j["layers"][1]["heads"][2];
  EXPECT_EQ(head["order"], best_paro_orders(density)[1][2]);
  for (size_t o = 0; o < kAxisOrders.size(); ++o) {
    EXPECT_NEAR(head["density"][kAxisOrders[o]].get<double>(), density[1][2][o].item<double>(), 1e-6);
    EXPECT_NEAR(head["key_blocks_per_query_block"][kAxisOrders[o]].get<double>(), 6 * density[1][2][o].item<double>(), 1e-5);
  }
}

TEST(ParoCalibration, BadUseSaysWhat) {
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { ParoCalibrator({0}, {16, 8}, 0.0); }, {"mass 0", "(0, 1]"}));
  ParoCalibrator calibrator({0}, {16, 8}, 0.9);
  EXPECT_TRUE(throws_with<std::logic_error>([&] { calibrator.mean_density(); }, {"no attention call"}));
  calibrator.observe(at::randn({1, 24, 1, 4}), at::randn({1, 24, 1, 4}), call({2, 3, 4}, 0, 5));  // not a calibrated step
  EXPECT_EQ(calibrator.samples(), 0);
  calibrator.observe(at::randn({1, 24, 1, 4}), at::randn({1, 24, 1, 4}), call({2, 3, 4}, 0, 0));
  EXPECT_TRUE(throws_with<c10::Error>(
      [&] { calibrator.observe(at::randn({1, 24, 1, 4}), at::randn({1, 24, 1, 4}), call({2, 4, 3}, 1, 0)); },
      {"grid 2x4x3", "2x3x4", "one video size"}));
}

}  // namespace
}  // namespace ditkit
