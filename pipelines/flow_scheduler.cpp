#include "pipelines/flow_scheduler.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "pipelines/euler_scheduler.h"
#include "pipelines/unipc_scheduler.h"

namespace ditkit {

FlowScheduler::FlowScheduler(double shift, int64_t num_train_timesteps)
    : shift_(shift), num_train_timesteps_(num_train_timesteps) {
  if (!(shift > 0) || !std::isfinite(shift)) {
    std::ostringstream msg;
    msg << "flow scheduler: shift must be a finite number > 0, got " << shift;
    throw std::invalid_argument(msg.str());
  }
  if (num_train_timesteps <= 0)
    throw std::invalid_argument("flow scheduler: num_train_timesteps must be > 0, got " +
                                std::to_string(num_train_timesteps));
}

void FlowScheduler::set_timesteps(int64_t num_steps) {
  if (num_steps <= 0)
    throw std::invalid_argument(name() + " scheduler: set_timesteps needs num_steps >= 1, got " +
                                std::to_string(num_steps));
  timesteps_.clear();
  sigmas_.clear();
  compute_schedule(num_steps);
  reset();
}

void FlowScheduler::reset() {
  step_index_ = 0;
  reset_state();
}

at::Tensor FlowScheduler::step(const at::Tensor& model_output, const at::Tensor& sample) {
  const std::string who = name() + " scheduler: step(): ";
  if (timesteps_.empty()) throw std::logic_error(who + "called before set_timesteps()");
  if (step_index_ >= num_steps()) {
    std::ostringstream msg;
    msg << who << "called more times than the " << num_steps()
        << " steps set; call reset() or set_timesteps() to start a new run";
    throw std::logic_error(msg.str());
  }
  if (!model_output.defined() || !sample.defined()) throw std::invalid_argument(who + "undefined tensor");
  if (!model_output.sizes().equals(sample.sizes())) {
    std::ostringstream msg;
    msg << who << "model_output shape " << model_output.sizes() << " differs from sample shape " << sample.sizes();
    throw std::invalid_argument(msg.str());
  }
  if (model_output.device() != sample.device()) {
    std::ostringstream msg;
    msg << who << "model_output is on " << model_output.device() << " but sample is on " << sample.device();
    throw std::invalid_argument(msg.str());
  }
  if (!at::isFloatingType(model_output.scalar_type()) || !at::isFloatingType(sample.scalar_type())) {
    std::ostringstream msg;
    msg << who << "model_output and sample must be floating point, got " << model_output.scalar_type() << " and "
        << sample.scalar_type();
    throw std::invalid_argument(msg.str());
  }
  // At least float32: the multistep differences of a bfloat16 model's outputs lose too much.
  const at::ScalarType compute = sample.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor next = step_impl(model_output.to(compute), sample.to(compute));
  ++step_index_;
  return next.to(sample.scalar_type());
}

std::unique_ptr<FlowScheduler> make_flow_scheduler(const std::string& name, double shift,
                                                   int64_t num_train_timesteps) {
  if (name == "unipc") return std::make_unique<UniPCScheduler>(shift, num_train_timesteps);
  if (name == "euler") return std::make_unique<EulerScheduler>(shift, num_train_timesteps);
  throw std::invalid_argument("unknown scheduler '" + name + "' (known: unipc, euler)");
}

}  // namespace ditkit
