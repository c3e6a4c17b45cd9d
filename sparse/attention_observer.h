// A hook that sees every self-attention call, whatever method the recipe picks: its q and k before
// the method runs, and its v, plan and output after. Profiling and diagnostics live above sparse/
// (pipelines/attention_profile.h, pipelines/ab_compare.h) and plug in here, so no method needs to
// know about them and the arrows keep pointing down.
#pragma once

#include <ATen/core/Tensor.h>

#include "sparse/plan.h"

namespace ditkit {

class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  // q, k [B, S, H, D] as the method receives them (after RoPE); called before the method runs.
  virtual void observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) = 0;
  // After the method ran: v, the plan it ran and its output, so an observer can measure what the
  // method did against other attention on the same inputs. Observers of q and k alone ignore it.
  virtual void observe_output(const at::Tensor& /*q*/, const at::Tensor& /*k*/, const at::Tensor& /*v*/,
                              const Plan& /*plan*/, const AttentionOutput& /*output*/,
                              const AttentionContext& /*ctx*/) {}
};

}  // namespace ditkit
