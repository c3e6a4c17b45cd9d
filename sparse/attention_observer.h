// A hook that sees the q and k of every self-attention call, whatever method the recipe picks:
// profiling and diagnostics live above sparse/ (pipelines/attention_profile.h) and plug in here,
// so no method needs to know about them and the arrows keep pointing down.
#pragma once

#include <ATen/core/Tensor.h>

#include "sparse/plan.h"

namespace ditkit {

class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  // q, k [B, S, H, D] as the method receives them (after RoPE); called before the method runs.
  virtual void observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) = 0;
};

}  // namespace ditkit
