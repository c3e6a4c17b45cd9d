// PARO's offline calibration: per layer and head, which of the six orders of the F, H, W axes
// (kernels/token_permute.h) packs self-attention into the fewest blocks at a target mass, measured
// from the exact softmax probabilities of calibration runs (pipelines/attention_map.h); and the
// recipe that runs `paro` (sparse/paro.cpp) with the orders found, a JSON recipe file that
// dit-gen, dit-ab and the library load as they load any recipe. dit-calibrate drives it.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "sparse/attention_observer.h"

namespace ditkit {

// At the chosen steps (check_profile_steps' form), for every layer, head and axis order, the
// fewest key blocks per query block that hold `mass` of the exact attention over the reordered
// tokens (attention_map.h's block_density), as a share of all key blocks. Every batch element is
// measured (with guidance: the conditional and the unconditional pass), since a paro plan serves
// both. Synchronises with the host after each measured layer, which calibration can afford.
class ParoCalibrator final : public AttentionObserver {
 public:
  ParoCalibrator(std::vector<int> steps, BlockShape blocks, double mass);

  void observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override;

  const std::vector<int>& steps() const { return steps_; }
  BlockShape blocks() const { return blocks_; }
  double mass() const { return mass_; }
  // The grid of the calls measured (all must share it); zero before the first.
  const LatentGrid& grid() const { return grid_; }
  // Calls measured per layer, counting each batch element (the same for every layer of whole runs).
  int64_t samples() const { return counts_.empty() ? 0 : counts_.front(); }

  // float64 [layers, heads, 6] on the CPU: the density per order of kAxisOrders, averaged over
  // every call measured. std::logic_error before any call.
  at::Tensor mean_density() const;

 private:
  std::vector<int> steps_;
  BlockShape blocks_;
  double mass_;
  LatentGrid grid_;
  std::vector<at::Tensor> sums_;  // per layer, float64 [heads, 6]
  std::vector<int64_t> counts_;   // per layer
};

// mean_density [layers, heads, 6] -> per layer and head the order with the lowest density; ties go
// to the earlier of kAxisOrders, so a head that no reordering helps stays frame-major (fhw).
std::vector<std::vector<std::string>> best_paro_orders(const at::Tensor& mean_density);

// The recipe as JSON text (sparse/recipe.h's form): one `paro` rule per layer, [L, L+1), with the
// layer's orders, selection by `mass` and key blocks of `k_block` tokens; no step conditions, so it
// covers a run of any length.
std::string paro_recipe_json(const std::vector<std::vector<std::string>>& orders, double mass, int64_t k_block);

// What the report says about the runs besides the measurements.
struct ParoCalibrationRun {
  std::string model;
  std::vector<std::string> prompts;
  int64_t seed = 0;
  int steps = 0;
  double guidance = 0, shift = 0;
  int64_t frames = 0, height = 0, width = 0;  // of the video
  std::string recipe_file;
};

// The report as JSON text: the runs, the grid, and per layer and head every order's density and
// mean key blocks per query block, with the order chosen.
std::string paro_calibration_report_json(const ParoCalibrationRun& run, const ParoCalibrator& calibrator);

}  // namespace ditkit
