// Self-attention as the model calls it: the recipe picks the method for each (layer, step), and
// each rule's method is built once and kept, so methods may cache plans across calls.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
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

  // Every method's learned weights (AttentionMethod::weights), one tensor per key, for the layers
  // of a model with num_layers layers its rule may run (a rule's layer range; every layer for the
  // default rule), created where missing: what a trainer optimises besides the model. Where two
  // rules' methods use one key (sla at two sparsities), they share the first one's tensor.
  std::vector<std::pair<std::string, at::Tensor>> weights(int num_layers, int64_t head_dim, at::Device device);

  // Hands `weights` (e.g. a fine-tuned model's sla_proj.safetensors) to every method; returns the
  // keys some method took. Keys none takes are not an error: a dense recipe may run a model tuned
  // for sla.
  std::vector<std::string> load_weights(const std::map<std::string, at::Tensor>& weights);

  // Shown every call's q and k before the method runs, and its v, plan and output after;
  // nullptr (the default) for none. Not owned.
  void set_observer(AttentionObserver* observer) { observer_ = observer; }

 private:
  Recipe recipe_;
  std::vector<std::unique_ptr<AttentionMethod>> methods_;  // one per rule, same order
  AttentionObserver* observer_ = nullptr;
};

}  // namespace ditkit
