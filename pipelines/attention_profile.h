// dit-profile's collection and report: an AttentionObserver that measures every layer's
// self-attention at chosen sampling steps (pipelines/attention_map.h), and the files it writes:
//   profile.json             every number, with the run (model, prompt, seed, grid, block sizes)
//   summary.md               one table per step: layer, head, class, shares, density@90/95/99
//   step_NNN.png             the block maps of one step, layers down and heads across
//   block_maps.safetensors   the block maps themselves, float32 [layers, heads, NQ, NK] per step
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

#include "pipelines/attention_map.h"
#include "sparse/attention_observer.h"

namespace ditkit {

// The mass levels density is reported at.
constexpr std::array<double, 3> kProfileMassLevels{0.90, 0.95, 0.99};

struct HeadProfile {
  int layer = 0, head = 0;
  std::array<double, kProfileMassLevels.size()> density{};  // block density at each mass level
  double spatial_share = 0, temporal_share = 0;             // ExactAttentionMap's, for this head
  HeadClass head_class = HeadClass::kOther;
};

struct StepProfile {
  int step = 0;
  double timestep = 0;
  LatentGrid grid;
  std::vector<at::Tensor> block_maps;  // per layer, float32 [H, NQ, NK] on the CPU
  std::vector<HeadProfile> heads;      // layer-major, then head
};

// Step indices to profile when none are asked for: the first, the middle and the last.
std::vector<int> default_profile_steps(int num_steps);

// The requested steps sorted and without repeats; std::invalid_argument naming the first step that
// is negative or past the run's last step (num_steps - 1).
std::vector<int> check_profile_steps(std::vector<int> steps, int num_steps);

// Measures the conditional pass only (batch element 0: with guidance the sampler batches cond
// then uncond), at the given steps (check_profile_steps' form). Synchronises with the host
// after each measured layer, which a profiling run can afford.
class AttentionProfiler final : public AttentionObserver {
 public:
  AttentionProfiler(std::vector<int> steps, BlockShape blocks) : steps_(std::move(steps)), blocks_(blocks) {}

  void observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override;

  const std::vector<int>& steps() const { return steps_; }
  BlockShape blocks() const { return blocks_; }
  // One per profiled step reached so far, in step order.
  const std::vector<StepProfile>& profiles() const { return profiles_; }

 private:
  std::vector<int> steps_;
  BlockShape blocks_;
  std::vector<StepProfile> profiles_;
};

// What the report says about the run besides the measurements.
struct ProfileRun {
  std::string model, prompt;
  int64_t seed = 0;
  int steps = 0;
  double guidance = 0, shift = 0;
  int64_t frames = 0, height = 0, width = 0;  // of the video
};

// Creates `dir` if needed; std::runtime_error saying why when it is not a writable folder.
void prepare_profile_folder(const std::string& dir);

// Writes the files listed at the top into `dir` (prepare_profile_folder's), each appearing
// complete or not at all.
void write_attention_profile(const std::string& dir, const ProfileRun& run, const AttentionProfiler& profiler);

}  // namespace ditkit
