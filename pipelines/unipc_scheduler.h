// UniPC multistep (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
// Sampling of Diffusion Models") for flow-matching models, as diffusers' UniPCMultistepScheduler
// runs it with the Wan2.1 checkpoints' configuration: flow_prediction, use_flow_sigmas, solver
// order 2, solver type bh2, predict_x0, lower_order_final, final sigma 0, linspace timesteps, no
// thresholding, corrector at every step after the first.
//
// Each step first corrects the sample the previous step predicted (UniC, using the model output
// just computed at it), then predicts the next sample (UniP) from the x0 predictions of this step
// and the one before. The first step and the last step predict at order 1.
#pragma once

#include "pipelines/flow_scheduler.h"

namespace ditkit {

class UniPCScheduler final : public FlowScheduler {
 public:
  explicit UniPCScheduler(double shift, int64_t num_train_timesteps = 1000)
      : FlowScheduler(shift, num_train_timesteps) {}
  std::string name() const override { return "unipc"; }

 protected:
  // Throws std::invalid_argument where the shift leaves noise levels that float32 cannot tell
  // apart or that reach 1 (the log-SNR steps would be 0 or infinite).
  void compute_schedule(int64_t num_steps) override;
  void reset_state() override;
  at::Tensor step_impl(const at::Tensor& model_output, const at::Tensor& sample) override;

 private:
  double lambda(int64_t i) const;  // log-SNR log(alpha / sigma) at sigmas_[i], alpha = 1 - sigma
  at::Tensor correct(const at::Tensor& x0) const;
  at::Tensor predict(const at::Tensor& x0, const at::Tensor& sample) const;

  // In the compute dtype, from the steps before: the x0 predictions of the last two steps and
  // the last step's (corrected) input sample.
  at::Tensor x0_prev_, x0_prev2_, last_sample_;
};

}  // namespace ditkit
