// `dense`: full attention (cuDNN on the GPU, PyTorch's CPU flash kernel on the CPU; see
// kernels/dense_attention.h for which backend runs where). The baseline and the warm-up method.
#include <ATen/ATen.h>

#include "sparse/method_registry.h"

namespace ditkit {

namespace {

class DenseMethod final : public AttentionMethod {
 public:
  std::string name() const override { return "dense"; }
  Plan plan(const at::Tensor&, const at::Tensor&, const AttentionContext&) override {
    Plan p;
    p.dense = true;
    return p;
  }
};

}  // namespace

MethodEntry dense_method_entry() {
  return {MethodSpec{"dense", {}, "full softmax attention (cuDNN on the GPU)"},
          [](const RecipeRule&) { return std::make_unique<DenseMethod>(); }};
}

}  // namespace ditkit
