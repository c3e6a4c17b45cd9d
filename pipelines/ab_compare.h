// dit-ab's comparison: one attention recipe against dense attention, same prompts, same seed,
// through TextToVideo. Per prompt it measures
//   - the frames: PSNR and SSIM per frame and mean (pipelines/frame_metrics.h);
//   - the attention itself: at every call of the recipe run, dense attention on that call's q, k,
//     v too, and ||out_recipe - out_dense|| / ||out_dense|| (over the whole call, cond and uncond),
//     with the density the recipe's plan ran (Plan::density), per layer and step;
//   - each run's time per part (text, denoise, decode);
//   - prompt adherence of both runs (shipped model, shape captions, builds with OpenCV only).
// and writes the report: report.json (every number), report.html (tables and, per prompt, the
// charts psnr_NN.png and layer_error_NN.png) and per prompt a side-by-side video (dense | recipe).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "pipelines/adherence_checker.h"
#include "pipelines/frame_metrics.h"
#include "pipelines/text_to_video.h"
#include "sparse/attention_observer.h"

namespace ditkit {

// Per layer, what the recipe's attention did against dense attention on the same inputs.
struct LayerComparison {
  double relative_error = 0;  // mean over the calls of the run
  double density = 0;         // mean Plan::density over the calls (1 for dense)
  // Per step; NaN for a step the layer was not called at (a run cut short).
  std::vector<double> step_error, step_density;
};

// Observes a recipe run: for every call, dense attention on the call's q, k, v (execute_plan with
// a dense plan, so a `dense` recipe compares equal to itself bit for bit), the relative L2 error
// and the plan's density. Synchronises with the host once per call, which a diagnostic run affords.
class AttentionErrorMeter final : public AttentionObserver {
 public:
  void observe(const at::Tensor&, const at::Tensor&, const AttentionContext&) override {}
  void observe_output(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan,
                      const AttentionOutput& output, const AttentionContext& ctx) override;

  // One per layer seen, in layer order.
  std::vector<LayerComparison> layers() const;

 private:
  struct Sums {
    double error = 0, density = 0;
    int calls = 0;
  };
  std::vector<std::vector<Sums>> sums_;  // [layer][step]
};

struct AdherenceComparison {
  bool checked = false;
  std::string note;  // why it was not checked
  CheckReport dense, recipe;
};

struct PromptComparison {
  std::string prompt;
  at::Tensor dense_frames, recipe_frames;  // uint8 [T, H, W, 3]
  FrameMetrics metrics;                    // recipe against dense
  std::vector<LayerComparison> layers;
  double mean_error = 0, mean_density = 0;  // over layers
  TextToVideoTimings dense_time, recipe_time;
  AdherenceComparison adherence;
};

struct AbOptions {
  std::string recipe;  // a recipe string or .json file (sparse/recipe.h)
  std::vector<std::string> prompts;
  TextToVideoOptions generation;  // the model's defaults as changed by the caller; prompt set per prompt
  // Check prompt adherence (meaningful for the shipped model only: its captions and palette).
  bool adherence = false;
};

// Progress lines ("prompt 1/2: dense run"), one call each.
using AbLog = std::function<void(const std::string&)>;

// Both runs of every prompt. The recipe is checked against the model's layers and the run's steps
// before any work (std::invalid_argument from the recipe parser or check_recipe).
std::vector<PromptComparison> compare_recipe_to_dense(TextToVideo& pipeline, const AbOptions& options,
                                                      const AbLog& log = {});

// What the report says about the run besides the measurements.
struct AbRun {
  std::string model, recipe, device;
  int64_t seed = 0;
  int steps = 0;
  double guidance = 0, shift = 0;
  int64_t frames = 0, height = 0, width = 0;
  int fps = 16;
};

// Writes into `dir` (an existing writable folder): report.json, report.html and, for prompt NN
// (00, 01, ...), psnr_NN.png, layer_error_NN.png and side_by_side_NN.y4m, plus .mp4 in builds
// with FFmpeg. Every file appears complete or not at all. Returns the names written.
std::vector<std::string> write_ab_report(const std::string& dir, const AbRun& run,
                                         const std::vector<PromptComparison>& results);

}  // namespace ditkit
