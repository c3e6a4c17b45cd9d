#include "pipelines/euler_scheduler.h"

namespace ditkit {

void EulerScheduler::compute_schedule(int64_t num_steps) {
  const double n_train = static_cast<double>(num_train_timesteps_);
  // diffusers shifts twice: its constructor shifts the float32 training table 1..N / N, and
  // set_timesteps spaces the run linearly between that table's shifted ends and shifts again.
  // The first shift runs in float32 tensor arithmetic; it is done here in float, in the same
  // order, so both ends come out bit for bit.
  const float f_shift = static_cast<float>(shift_), f_shift_minus_1 = static_cast<float>(shift_ - 1);
  auto shift_f32 = [&](float s) { return f_shift * s / (1.0f + f_shift_minus_1 * s); };
  const double t_max = static_cast<double>(shift_f32(1.0f)) * n_train;
  const double t_min = static_cast<double>(shift_f32(1.0f / static_cast<float>(num_train_timesteps_))) * n_train;

  // numpy.linspace(t_max, t_min, num_steps): start + i * step with the end set exactly.
  const double delta = t_min - t_max;
  const double step = num_steps > 1 ? delta / static_cast<double>(num_steps - 1) : 0.0;
  for (int64_t i = 0; i < num_steps; ++i) {
    const double t = i == num_steps - 1 && num_steps > 1 ? t_min : static_cast<double>(i) * step + t_max;
    const double s = t / n_train;
    const float sigma = static_cast<float>(shift_ * s / (1 + (shift_ - 1) * s));
    sigmas_.push_back(sigma);
    timesteps_.push_back(sigma * static_cast<float>(num_train_timesteps_));  // float32, as diffusers
  }
  sigmas_.push_back(0.0);
}

at::Tensor EulerScheduler::step_impl(const at::Tensor& model_output, const at::Tensor& sample) {
  // Two float32 sigmas of one schedule differ exactly in double, so cast to float (as ATen does
  // for a float32 sample) dt is what diffusers' float32 subtraction gives.
  const double dt = sigmas_[step_index_ + 1] - sigmas_[step_index_];
  return sample + model_output * dt;
}

}  // namespace ditkit
