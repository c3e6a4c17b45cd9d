// Flow-matching Euler with a static shift: diffusers' FlowMatchEulerDiscreteScheduler as Wan uses
// it (use_dynamic_shifting off, no stochastic sampling).
#pragma once

#include "pipelines/flow_scheduler.h"

namespace ditkit {

class EulerScheduler final : public FlowScheduler {
 public:
  explicit EulerScheduler(double shift, int64_t num_train_timesteps = 1000)
      : FlowScheduler(shift, num_train_timesteps) {}
  std::string name() const override { return "euler"; }

 protected:
  void compute_schedule(int64_t num_steps) override;
  void reset_state() override {}  // single-step: nothing carries over between steps
  at::Tensor step_impl(const at::Tensor& model_output, const at::Tensor& sample) override;
};

}  // namespace ditkit
