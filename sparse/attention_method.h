// The one interface every acceleration method implements. A method is chosen per layer and step
// by a recipe (sparse/recipe.h); plan() decides what to compute, run() computes it, and a plan
// may be kept and run again at later steps.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sparse/plan.h"
#include "sparse/recipe.h"

namespace ditkit {

class AttentionMethod {
 public:
  virtual ~AttentionMethod() = default;
  virtual std::string name() const = 0;

  // q, k [B, S, H, D] (strided views); nothing here synchronises with the host.
  virtual Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) = 0;

  // Attention output [B, S, H, D] and lse [B, H, S] in the original token order.
  virtual AttentionOutput run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan) {
    return execute_plan(q, k, v, plan);
  }

  // plan() then run() on the same q, k, v, for callers that run a plan as soon as it is made (the
  // sampler does); `made` receives the plan, to keep or inspect. A method may override it to share
  // a pass over the inputs between planning and running (sla's fused path takes k's block means
  // from its summaries kernel); the result is what plan() then run() give, up to fp32 summation
  // order.
  virtual AttentionOutput plan_and_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const AttentionContext& ctx, Plan& made) {
    made = plan(q, k, ctx);
    return run(q, k, v, made);
  }

  // Forget whatever is kept between calls (plans reused across steps): a sampling run begins.
  virtual void reset() {}

  // Learned weights the method computes with (sla's projections), by key, e.g.
  // "blocks.3.attn1.sla_proj.weight", for `layers`: created at their initial values where missing,
  // float32 on `device`. They are the very tensors plans carry, so a trainer may set requires_grad
  // on them and update them in place. Most methods have none.
  virtual std::vector<std::pair<std::string, at::Tensor>> weights(const std::vector<int>& layers, int64_t head_dim,
                                                                  at::Device device) {
    return {};
  }

  // Adopts the tensors of `weights` whose keys it uses as its own (shared, not copied; moved to
  // the run's device on first use there) and returns those keys; other keys are left alone.
  virtual std::vector<std::string> load_weights(const std::map<std::string, at::Tensor>& weights) { return {}; }
};

// The methods a recipe can name, with their parameters (what the recipe parser validates against).
const std::vector<MethodSpec>& attention_method_specs();

// A method configured from one recipe rule (its parameters already validated and filled in).
std::unique_ptr<AttentionMethod> make_attention_method(const RecipeRule& rule);

}  // namespace ditkit
