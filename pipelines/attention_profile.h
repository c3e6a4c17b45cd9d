// dit-profile's collection and report: an AttentionObserver that measures every layer's
// self-attention at chosen sampling steps (pipelines/attention_map.h), runs candidate sparse
// methods on the same q, k, v to measure their error against dense, and writes:
//   profile.json             every number, with the run (model, prompt, seed, grid, block sizes)
//   summary.md               per step: layer, head, class, shares, density@90/95/99; candidates'
//                            error and density per layer
//   step_NNN.png             the block maps of one step, layers down and heads across
//   step_NNN_candidates.png  the candidates' error of one step, a tile per candidate
//   block_maps.safetensors   the block maps themselves, float32 [layers, heads, NQ, NK] per step
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "pipelines/attention_map.h"
#include "sparse/attention_method.h"
#include "sparse/attention_observer.h"

namespace ditkit {

// The mass levels density is reported at.
constexpr std::array<double, 3> kProfileMassLevels{0.90, 0.95, 0.99};

// One candidate method on one head: ||out - out_dense|| / ||out_dense|| over the head's tokens
// and channels, and the share of key blocks its plan kept for the head (1 for a dense plan).
struct CandidateError {
  double error = 0, density = 0;
};

struct HeadProfile {
  int layer = 0, head = 0;
  std::array<double, kProfileMassLevels.size()> density{};  // block density at each mass level
  double spatial_share = 0, temporal_share = 0;             // ExactAttentionMap's, for this head
  HeadClass head_class = HeadClass::kOther;
  std::vector<CandidateError> candidates;  // in the order of AttentionProfiler::candidates()
};

// A sparse method to measure against dense: the rule as the user wrote it, for reports, and parsed.
struct ProfileCandidate {
  std::string name;
  RecipeRule rule;
};

// The candidates dit-profile measures when none are asked for: one of each kind of block choice.
const std::vector<std::string>& default_profile_candidates();

// Each text must be one recipe rule without conditions (`topk:k=4`, `paro:order=wfh:k=4`), parsed
// against attention_method_specs(); RecipeError (the parser's, or one saying why the text is not a
// single rule) otherwise. The single text "none" asks for no candidates (a profile at its old cost).
std::vector<ProfileCandidate> parse_profile_candidates(const std::vector<std::string>& texts);

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
// then uncond), at the given steps (check_profile_steps' form). The run's own method must be
// dense: its output is the reference each candidate is measured against. Each candidate has one
// method for the whole run, so methods that keep state across calls see the profiled steps in
// order. Synchronises with the host after each measured layer, which a profiling run can afford.
class AttentionProfiler final : public AttentionObserver {
 public:
  AttentionProfiler(std::vector<int> steps, BlockShape blocks, std::vector<ProfileCandidate> candidates = {});

  void observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override;
  void observe_output(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan,
                      const AttentionOutput& output, const AttentionContext& ctx) override;

  const std::vector<int>& steps() const { return steps_; }
  BlockShape blocks() const { return blocks_; }
  const std::vector<ProfileCandidate>& candidates() const { return candidates_; }
  // Per candidate, the seconds its plan(), run() and measuring took over the whole profile (host clock).
  const std::vector<double>& candidate_seconds() const { return candidate_seconds_; }
  // One per profiled step reached so far, in step order.
  const std::vector<StepProfile>& profiles() const { return profiles_; }

 private:
  std::vector<int> steps_;
  BlockShape blocks_;
  std::vector<ProfileCandidate> candidates_;
  std::vector<std::unique_ptr<AttentionMethod>> methods_;  // one per candidate
  std::vector<double> candidate_seconds_;
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
