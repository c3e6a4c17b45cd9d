#include "sparse/recipe_attention.h"

#include <ATen/ATen.h>

namespace ditkit {

RecipeAttention::RecipeAttention(Recipe recipe) : recipe_(std::move(recipe)) {
  for (const RecipeRule& rule : recipe_.rules) methods_.push_back(make_attention_method(rule));
}

void RecipeAttention::begin_run(int num_layers, int num_steps) {
  check(num_layers, num_steps);
  for (const auto& method : methods_) method->reset();
}

AttentionMethod& RecipeAttention::method_for(const AttentionContext& ctx) {
  const RecipeRule& rule = recipe_.rule_for(ctx.layer, ctx.step, ctx.num_steps);
  return *methods_[static_cast<size_t>(&rule - recipe_.rules.data())];
}

AttentionOutput RecipeAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const AttentionContext& ctx) {
  if (observer_) observer_->observe(q, k, ctx);
  AttentionMethod& method = method_for(ctx);
  const Plan plan = method.plan(q, k, ctx);
  AttentionOutput output = method.run(q, k, v, plan);
  if (observer_) observer_->observe_output(q, k, v, plan, output, ctx);
  return output;
}

}  // namespace ditkit
