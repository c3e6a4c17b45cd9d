#include "pipelines/paro_calibration.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "kernels/token_permute.h"
#include "pipelines/attention_map.h"
#include "sparse/paro.h"

namespace ditkit {

using nlohmann::ordered_json;

ParoCalibrator::ParoCalibrator(std::vector<int> steps, BlockShape blocks, double mass)
    : steps_(std::move(steps)), blocks_(blocks), mass_(mass) {
  if (!(mass > 0 && mass <= 1)) throw std::invalid_argument("calibration mass " + std::to_string(mass) + " is not in (0, 1]");
}

void ParoCalibrator::observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) {
  if (!std::binary_search(steps_.begin(), steps_.end(), ctx.step)) return;
  const LatentGrid& g = ctx.grid;
  if (grid_.tokens() == 0) grid_ = g;
  TORCH_CHECK(g.frames == grid_.frames && g.height == grid_.height && g.width == grid_.width,
              "ParoCalibrator: grid ", g.frames, "x", g.height, "x", g.width, " differs from the first call's ",
              grid_.frames, "x", grid_.height, "x", grid_.width, ": calibrate one video size at a time");
  const int64_t B = q.size(0), H = q.size(2);
  if (ctx.layer >= static_cast<int>(sums_.size())) {
    sums_.resize(ctx.layer + 1);
    counts_.resize(ctx.layer + 1, 0);
  }
  at::Tensor& sum = sums_[ctx.layer];
  if (!sum.defined()) sum = at::zeros({H, static_cast<int64_t>(kAxisOrders.size())}, at::kDouble);
  TORCH_CHECK(sum.size(0) == H, "ParoCalibrator: layer ", ctx.layer, " has ", H, " heads, earlier ", sum.size(0));

  const BlockGeometry geometry{g.tokens(), blocks_.q_block, blocks_.k_block};
  for (size_t o = 0; o < kAxisOrders.size(); ++o) {
    const at::Tensor perm = axis_order_permutation(g.frames, g.height, g.width, kAxisOrders[o], q.device());
    // Only the block map is used: the spatial and temporal shares it also measures assume
    // frame-major tokens, which the reordered ones are not.
    const ExactAttentionMap map = exact_attention_map(permute_tokens(q, perm), permute_tokens(k, perm), g, blocks_);
    sum.select(1, static_cast<int64_t>(o)) += block_density(map.block_map, geometry, mass_).sum(0).cpu();
  }
  counts_[ctx.layer] += B;
}

at::Tensor ParoCalibrator::mean_density() const {
  if (counts_.empty() || std::count(counts_.begin(), counts_.end(), 0) > 0)
    throw std::logic_error("ParoCalibrator: no attention call of some layer was measured");
  std::vector<at::Tensor> layers;
  for (size_t l = 0; l < sums_.size(); ++l) layers.push_back(sums_[l] / static_cast<double>(counts_[l]));
  return at::stack(layers);
}

std::vector<std::vector<std::string>> best_paro_orders(const at::Tensor& mean_density) {
  TORCH_CHECK(mean_density.dim() == 3 && mean_density.size(2) == static_cast<int64_t>(kAxisOrders.size()),
              "best_paro_orders: expected [layers, heads, ", kAxisOrders.size(), "], got ", mean_density.sizes());
  const at::Tensor d = mean_density.to(at::kCPU, at::kDouble).contiguous();
  auto a = d.accessor<double, 3>();
  std::vector<std::vector<std::string>> orders(d.size(0));
  for (int64_t l = 0; l < d.size(0); ++l)
    for (int64_t h = 0; h < d.size(1); ++h) {
      int64_t best = 0;
      for (int64_t o = 1; o < d.size(2); ++o)
        if (a[l][h][o] < a[l][h][best]) best = o;
      orders[l].push_back(kAxisOrders[best]);
    }
  return orders;
}

std::string paro_recipe_json(const std::vector<std::vector<std::string>>& orders, double mass, int64_t k_block) {
  // One rule a line, keys in the order a reader looks for them.
  std::string text = "{\"rules\": [\n";
  for (size_t l = 0; l < orders.size(); ++l) {
    const ordered_json rule = {
        {"method", "paro"},
        {"layers", {l, l + 1}},
        {"params", {{"order", paro_order_value(orders[l])}, {"mass", mass}, {"kblock", std::to_string(k_block)}}}};
    text += "  " + rule.dump() + (l + 1 < orders.size() ? ",\n" : "\n");
  }
  return text + "]}\n";
}

namespace {

// Six decimals are plenty for densities and keep the report readable.
double rounded(double x) { return std::round(x * 1e6) / 1e6; }

}  // namespace

std::string paro_calibration_report_json(const ParoCalibrationRun& run, const ParoCalibrator& calibrator) {
  const at::Tensor density = calibrator.mean_density();
  const std::vector<std::vector<std::string>> best = best_paro_orders(density);
  const LatentGrid& g = calibrator.grid();
  const BlockGeometry geometry{g.tokens(), calibrator.blocks().q_block, calibrator.blocks().k_block};
  auto d = density.accessor<double, 3>();
  // Keys in the order a reader looks for them: the run, then the measurements.
  ordered_json layers = ordered_json::array();
  for (int64_t l = 0; l < density.size(0); ++l) {
    ordered_json heads = ordered_json::array();
    for (int64_t h = 0; h < density.size(1); ++h) {
      ordered_json per_order, blocks;
      for (size_t o = 0; o < kAxisOrders.size(); ++o) {
        per_order[kAxisOrders[o]] = rounded(d[l][h][o]);
        blocks[kAxisOrders[o]] = rounded(d[l][h][o] * static_cast<double>(geometry.num_k_blocks()));
      }
      heads.push_back({{"head", h}, {"order", best[l][h]}, {"density", per_order}, {"key_blocks_per_query_block", blocks}});
    }
    layers.push_back({{"layer", l}, {"order", paro_order_value(best[l])}, {"heads", heads}});
  }
  ordered_json j;
  j["model"] = run.model;
  j["recipe"] = run.recipe_file;
  j["prompts"] = run.prompts;
  j["seed"] = run.seed;
  j["steps"] = run.steps;
  j["guidance"] = run.guidance;
  j["shift"] = run.shift;
  j["video"] = {{"frames", run.frames}, {"height", run.height}, {"width", run.width}};
  j["grid"] = {{"frames", g.frames}, {"height", g.height}, {"width", g.width}, {"tokens", g.tokens()}};
  j["q_block"] = calibrator.blocks().q_block;
  j["k_block"] = calibrator.blocks().k_block;
  j["query_blocks"] = geometry.num_q_blocks();
  j["key_blocks"] = geometry.num_k_blocks();
  j["mass"] = calibrator.mass();
  j["calibrated_steps"] = calibrator.steps();
  j["samples_per_layer"] = calibrator.samples();
  j["orders"] = kAxisOrders;
  j["measure"] = "per query block the fewest key blocks holding `mass` of the exact softmax attention over the "
                 "tokens in that order, as a share of all key blocks (density) and as a count, averaged over query "
                 "blocks, steps, prompts and both guidance passes; the lowest density is chosen, ties to the earlier "
                 "order in `orders`";
  j["layers"] = layers;
  return j.dump(2) + "\n";
}

}  // namespace ditkit
