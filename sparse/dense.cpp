// `dense`: full attention, the baseline and the warm-up method. `kernel=auto` (the default) runs
// ditkit's own attention kernel where it applies (Hopper, bf16/fp16, head dim 64 or 128: every
// block of the block-sparse kernel, faster than cuDNN there) and the library's fused attention
// elsewhere; `kernel=cudnn` always takes the library path (kernels/dense_attention.h).
#include <ATen/ATen.h>

#include "kernels/dense_attention.h"
#include "sparse/method_registry.h"

namespace ditkit {

namespace {

class DenseMethod final : public AttentionMethod {
 public:
  explicit DenseMethod(bool library_only) : library_only_(library_only) {}
  std::string name() const override { return "dense"; }
  Plan plan(const at::Tensor&, const at::Tensor&, const AttentionContext&) override {
    Plan p;
    p.dense = true;
    return p;
  }
  AttentionOutput run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan) override {
    return library_only_ ? dense_attention(q, k, v) : execute_plan(q, k, v, plan);
  }

 private:
  bool library_only_;
};

}  // namespace

MethodEntry dense_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{"dense",
                  {{"kernel", T::kString, 0, 0, {"auto", "cudnn"}, false, "auto",
                    "auto: ditkit's kernel where it runs (Hopper), else the library; cudnn: always the library"}},
                  "full softmax attention"};
  return {spec, [](const RecipeRule& rule) {
            return std::make_unique<DenseMethod>(rule.string_param("kernel") == "cudnn");
          }};
}

}  // namespace ditkit
