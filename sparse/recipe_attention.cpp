#include "sparse/recipe_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>

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

std::vector<std::pair<std::string, at::Tensor>> RecipeAttention::weights(int num_layers, int64_t head_dim,
                                                                          at::Device device) {
  std::vector<std::pair<std::string, at::Tensor>> all;
  std::map<std::string, at::Tensor> first;
  for (size_t i = 0; i < methods_.size(); ++i) {
    const auto [begin, end] = recipe_.rules[i].layers.resolve(0);  // layer bounds are never percentages
    std::vector<int> layers;
    for (int layer = begin; layer < std::min(end, num_layers); ++layer) layers.push_back(layer);
    for (auto& [key, tensor] : methods_[i]->weights(layers, head_dim, device)) {
      auto [it, inserted] = first.emplace(key, tensor);
      if (inserted)
        all.emplace_back(key, tensor);
      else if (!it->second.is_same(tensor))
        methods_[i]->load_weights({{key, it->second}});
    }
  }
  return all;
}

std::vector<std::string> RecipeAttention::load_weights(const std::map<std::string, at::Tensor>& weights) {
  std::set<std::string> taken;
  for (const auto& method : methods_)
    for (std::string& key : method->load_weights(weights)) taken.insert(std::move(key));
  return {taken.begin(), taken.end()};
}

AttentionOutput RecipeAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const AttentionContext& ctx) {
  if (observer_) observer_->observe(q, k, ctx);
  AttentionMethod& method = method_for(ctx);
  Plan plan;
  AttentionOutput output = method.plan_and_run(q, k, v, ctx, plan);
  if (observer_) observer_->observe_output(q, k, v, plan, output, ctx);
  return output;
}

}  // namespace ditkit
