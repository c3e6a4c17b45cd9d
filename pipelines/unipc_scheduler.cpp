#include "pipelines/unipc_scheduler.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace ditkit {

void UniPCScheduler::compute_schedule(int64_t num_steps) {
  const double n_train = static_cast<double>(num_train_timesteps_);
  // numpy.linspace(1, 1 / N, num_steps + 1)[:-1]: start + i * step, evaluated as numpy does so
  // the integer timesteps below truncate the same products.
  const double start = 1.0, step = (1.0 / n_train - start) / static_cast<double>(num_steps);
  std::vector<double> sigmas(num_steps);
  for (int64_t i = 0; i < num_steps; ++i) {
    const double s = static_cast<double>(i) * step + start;
    sigmas[i] = shift_ * s / (1 + (shift_ - 1) * s);
  }
  // diffusers moves a first sigma of 1 just below it, so that log(alpha) = log(1 - sigma) is finite.
  constexpr double kEps = 1e-6;
  if (std::fabs(sigmas[0] - 1) < kEps) sigmas[0] -= kEps;

  for (int64_t i = 0; i < num_steps; ++i) {
    // The model sees the float64 sigma times N truncated to an integer (diffusers' int64 cast);
    // the solver sees the sigma rounded to float32 (diffusers' table).
    timesteps_.push_back(std::trunc(sigmas[i] * n_train));
    sigmas_.push_back(static_cast<float>(sigmas[i]));
    const double above = i == 0 ? 1.0 : sigmas_[i - 1];
    if (!(sigmas_[i] > 0 && sigmas_[i] < above)) {
      std::ostringstream msg;
      msg << "unipc scheduler: shift " << shift_ << " with " << num_steps
          << " steps gives float32 noise levels that are not strictly decreasing inside (0, 1) (sigma[" << i
          << "] = " << sigmas_[i] << "); use a shift nearer 1 or fewer steps";
      throw std::invalid_argument(msg.str());
    }
  }
  sigmas_.push_back(0.0);
}

void UniPCScheduler::reset_state() {
  x0_prev_ = at::Tensor();
  x0_prev2_ = at::Tensor();
  last_sample_ = at::Tensor();
}

double UniPCScheduler::lambda(int64_t i) const {
  const double sigma = sigmas_[i];
  return std::log(1 - sigma) - std::log(sigma);
}

// UniC-p at step i >= 1: redoes the previous step's update from last_sample_ with the model
// output now known at its end (x0). p is the order the previous step predicted at, min(2, i)
// (a run's last step is never corrected, so lower_order_final does not lower it).
at::Tensor UniPCScheduler::correct(const at::Tensor& x0) const {
  const int64_t i = step_index_;
  const double sigma_t = sigmas_[i], sigma_s0 = sigmas_[i - 1], alpha_t = 1 - sigma_t;
  const double h = lambda(i) - lambda(i - 1);
  const double hh = -h;  // predict_x0: the update runs in -lambda
  const double h_phi_1 = std::expm1(hh);
  const double b_h = h_phi_1;  // bh2
  const at::Tensor& m0 = x0_prev_;
  const at::Tensor x_t = last_sample_ * (sigma_t / sigma_s0) - m0 * (alpha_t * h_phi_1);
  const at::Tensor d1_t = x0 - m0;
  if (i == 1) return x_t - d1_t * (0.5 * alpha_t * b_h);  // order 1: rho = 1/2

  // Order 2: the coefficients rho solve R rho = b with R = [[1, 1], [r, 1]], r the log-SNR
  // distance to the step before last relative to h, and b from the phi functions of h.
  const double r = (lambda(i - 2) - lambda(i - 1)) / h;
  const at::Tensor d1 = (x0_prev2_ - m0) / r;
  double h_phi_k = h_phi_1 / hh - 1;
  const double b1 = h_phi_k / b_h;
  h_phi_k = h_phi_k / hh - 0.5;
  const double b2 = h_phi_k * 2 / b_h;
  const double rho0 = (b1 - b2) / (1 - r), rho1 = (b2 - r * b1) / (1 - r);
  return x_t - (d1 * rho0 + d1_t * rho1) * (alpha_t * b_h);
}

// UniP-p from step i to i + 1, from the corrected sample; p = 2 except at the first step (no
// earlier x0 yet) and the last (lower_order_final).
at::Tensor UniPCScheduler::predict(const at::Tensor& x0, const at::Tensor& sample) const {
  const int64_t i = step_index_;
  const double sigma_t = sigmas_[i + 1], sigma_s0 = sigmas_[i];
  // The last step goes to sigma = 0, where lambda is infinite; the order-1 update's limit there
  // is x0 itself (sigma_t / sigma_s0 = 0, alpha_t = 1, expm1(-inf) = -1).
  if (sigma_t == 0) return x0;
  const double alpha_t = 1 - sigma_t;
  const double h = lambda(i + 1) - lambda(i);
  const double h_phi_1 = std::expm1(-h);
  const double b_h = h_phi_1;  // bh2
  const at::Tensor x_t = sample * (sigma_t / sigma_s0) - x0 * (alpha_t * h_phi_1);
  if (i == 0) return x_t;

  const double r = (lambda(i - 1) - lambda(i)) / h;
  const at::Tensor d1 = (x0_prev_ - x0) / r;
  return x_t - (d1 * 0.5) * (alpha_t * b_h);  // order 2 predictor: rho = 1/2
}

at::Tensor UniPCScheduler::step_impl(const at::Tensor& model_output, const at::Tensor& sample) {
  if (last_sample_.defined() &&
      (!last_sample_.sizes().equals(sample.sizes()) || last_sample_.device() != sample.device())) {
    std::ostringstream msg;
    msg << "unipc scheduler: step(): sample " << sample.sizes() << " on " << sample.device()
        << " differs from the previous step's " << last_sample_.sizes() << " on " << last_sample_.device()
        << "; call reset() to start a new run";
    throw std::invalid_argument(msg.str());
  }
  // Flow prediction: the model predicts noise - x0, and sample = (1 - sigma) x0 + sigma noise.
  const at::Tensor x0 = sample - model_output * sigmas_[step_index_];
  const at::Tensor corrected = step_index_ > 0 ? correct(x0) : sample;
  at::Tensor next = predict(x0, corrected);
  x0_prev2_ = x0_prev_;
  x0_prev_ = x0;
  last_sample_ = corrected;
  return next;
}

}  // namespace ditkit
