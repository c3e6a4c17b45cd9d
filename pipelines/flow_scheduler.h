// Flow-matching schedulers: the noise levels of a sampling run and the update from one level to
// the next, given the model's velocity prediction. They reproduce diffusers' schedulers for Wan2.1
// (UniPCMultistepScheduler as the Wan checkpoints configure it; FlowMatchEulerDiscreteScheduler
// with a static shift), so ditkit and the reference sample the same trajectory.
//
// A run: set_timesteps(n); then for i in 0..n-1: v = model(sample, timesteps()[i]);
// sample = step(v, sample). The flow convention: sample = (1 - sigma) x0 + sigma noise, the model
// predicts the velocity noise - x0, and a run starts from pure noise and ends at sigma = 0.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ditkit {

class FlowScheduler {
 public:
  // shift > 0 bends the schedule towards high noise: sigma' = shift sigma / (1 + (shift - 1) sigma)
  // (Wan2.1: 3.0 at 480p, 5.0 at 720p; 1 leaves it unchanged). Throws std::invalid_argument for
  // shift <= 0 or not finite, or num_train_timesteps <= 0.
  FlowScheduler(double shift, int64_t num_train_timesteps);
  virtual ~FlowScheduler() = default;
  FlowScheduler(const FlowScheduler&) = delete;
  FlowScheduler& operator=(const FlowScheduler&) = delete;

  virtual std::string name() const = 0;
  double shift() const { return shift_; }
  int64_t num_train_timesteps() const { return num_train_timesteps_; }

  // Computes the schedule for num_steps model evaluations (>= 1, else std::invalid_argument) and
  // starts a new run, as reset() does.
  void set_timesteps(int64_t num_steps);
  // Forgets the multistep state and starts the same schedule again from step 0.
  void reset();

  int64_t num_steps() const { return static_cast<int64_t>(timesteps_.size()); }  // 0 before set_timesteps
  int64_t step_index() const { return step_index_; }                             // steps taken this run
  // What the model is given at each step, on the 0..num_train_timesteps scale, decreasing.
  const std::vector<double>& timesteps() const { return timesteps_; }
  // The noise level before each step and after the last: num_steps + 1 values, the last 0. They
  // are float32 values (diffusers keeps its table in float32), held as doubles.
  const std::vector<double>& sigmas() const { return sigmas_; }

  // One step: from the model output at the current sigma to the sample at the next sigma; the
  // step index advances. model_output and sample: equal shapes, same device, floating point (their
  // dtypes may differ, e.g. a bfloat16 model over float32 latents). The math runs in float32, or
  // float64 if the sample is float64; the result has the sample's dtype. Launches device work
  // only, no host synchronisation. Throws std::logic_error before set_timesteps or past the last
  // step, std::invalid_argument for mismatched inputs.
  at::Tensor step(const at::Tensor& model_output, const at::Tensor& sample);

 protected:
  // Fills timesteps_ (num_steps values) and sigmas_ (num_steps + 1) for a checked num_steps.
  virtual void compute_schedule(int64_t num_steps) = 0;
  virtual void reset_state() = 0;
  // The update at step_index_, on model_output and sample already in the compute dtype; returns
  // the next sample in that dtype.
  virtual at::Tensor step_impl(const at::Tensor& model_output, const at::Tensor& sample) = 0;

  const double shift_;
  const int64_t num_train_timesteps_;
  std::vector<double> timesteps_;
  std::vector<double> sigmas_;
  int64_t step_index_ = 0;
};

// name: "unipc" (UniPC multistep, order 2, bh2, predictor + corrector: Wan2.1's default) or
// "euler" (flow-matching Euler). Throws std::invalid_argument for another name or a bad shift.
std::unique_ptr<FlowScheduler> make_flow_scheduler(const std::string& name, double shift,
                                                   int64_t num_train_timesteps = 1000);

}  // namespace ditkit
