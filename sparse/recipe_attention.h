// Self-attention as the model calls it: the recipe picks the method for each (layer, step), and
// each rule's method is built once and kept, so methods may cache plans across calls.
#pragma once

#include <memory>
#include <vector>

#include "sparse/attention_method.h"
#include "sparse/attention_observer.h"

namespace ditkit {

class RecipeAttention {
 public:
  explicit RecipeAttention(Recipe recipe);

  // Checks the recipe covers every layer and step of a run (call before sampling).
  void check(int num_layers, int num_steps) const { check_recipe(recipe_, num_layers, num_steps); }

  // Starts a sampling run: check(), then every method forgets what it kept from an earlier run
  // (one RecipeAttention may serve many runs, e.g. dit-adherence's prompts). sample() calls it.
  void begin_run(int num_layers, int num_steps);

  AttentionOutput forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionContext& ctx);

  // The method that handles (layer, step) of a run of num_steps steps.
  AttentionMethod& method_for(const AttentionContext& ctx);

  // Shown every call's q and k before the method runs, and its v, plan and output after;
  // nullptr (the default) for none. Not owned.
  void set_observer(AttentionObserver* observer) { observer_ = observer; }

 private:
  Recipe recipe_;
  std::vector<std::unique_ptr<AttentionMethod>> methods_;  // one per rule, same order
  AttentionObserver* observer_ = nullptr;
};

}  // namespace ditkit
