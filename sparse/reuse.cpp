// `reuse`: attention patterns change slowly across denoising steps, so a plan made at one step
// serves the next few. What it keeps: per layer, the inner method's last plan, the step it was
// made at, the shape it was made for and (with drift) the q/k block means it was made from.
// RecipeAttention::begin_run() calls reset() at the start of every sampling run, which drops all
// of it; a call whose step goes back, or whose step count or shape differs, re-plans as well, so
// callers that drive a method directly never run a plan from another run or another shape.
#include "sparse/reuse.h"

#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <vector>

#include "kernels/block_pool.h"
#include "sparse/method_registry.h"
#include "sparse/wrapped_method.h"

namespace ditkit {

namespace {

class ReuseMethod final : public WrappedMethod {
 public:
  ReuseMethod(std::unique_ptr<AttentionMethod> inner, ReuseSchedule schedule)
      : WrappedMethod(std::move(inner)), schedule_(schedule) {}
  std::string name() const override { return "reuse"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    if (auto fresh = fresh_plan_needed(q, k, ctx)) kept_[ctx.layer] = Kept{inner().plan(q, k, ctx), std::move(*fresh)};
    return kept_[ctx.layer].plan;
  }

  AttentionOutput plan_and_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionContext& ctx, Plan& made) override {
    if (auto fresh = fresh_plan_needed(q, k, ctx)) {
      AttentionOutput out = inner().plan_and_run(q, k, v, ctx, made);
      kept_[ctx.layer] = Kept{made, std::move(*fresh)};
      return out;
    }
    made = kept_[ctx.layer].plan;
    return inner().run(q, k, v, made);
  }

  void reset() override {
    kept_.clear();
    WrappedMethod::reset();
  }

 private:
  // When a plan was made, and from what.
  struct Origin {
    int step = 0;
    std::vector<int64_t> shape;  // q's sizes, the grid, num_steps
    at::Device device = at::kCPU;
    at::Tensor summary;  // drift only: fp32 block means of q then k, flattened
  };
  struct Kept {
    Plan plan;
    Origin origin;
  };

  // The origin a fresh plan would have where this call needs one; nothing where the kept plan serves.
  std::optional<Origin> fresh_plan_needed(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) {
    Origin now{ctx.step, q.sizes().vec(), q.device(), {}};
    now.shape.insert(now.shape.end(), {ctx.grid.frames, ctx.grid.height, ctx.grid.width, ctx.num_steps});
    auto it = kept_.find(ctx.layer);
    bool replan = it == kept_.end() || it->second.origin.shape != now.shape || it->second.origin.device != now.device ||
                  ctx.step < it->second.origin.step ||
                  (schedule_.every > 0 && ctx.step - it->second.origin.step >= schedule_.every);
    if (schedule_.drift > 0) {
      now.summary = summarise(q, k);
      // The one host sync: whether to launch the inner planner is decided on the host.
      if (!replan) {
        const at::Tensor& was = it->second.origin.summary;
        replan = ((now.summary - was).norm() / was.norm()).item<double>() > schedule_.drift;
      }
    }
    if (!replan) return std::nullopt;
    return now;
  }

  // What the drift is measured on: the 128-token block means that block-score planners rank.
  static at::Tensor summarise(const at::Tensor& q, const at::Tensor& k) {
    return at::cat({block_mean_pool(q, 128).flatten(), block_mean_pool(k, 128).flatten()}).to(at::kFloat);
  }

  ReuseSchedule schedule_;
  std::map<int, Kept> kept_;  // by layer
};

}  // namespace

std::unique_ptr<AttentionMethod> make_reuse_method(std::unique_ptr<AttentionMethod> inner, ReuseSchedule schedule) {
  return std::make_unique<ReuseMethod>(std::move(inner), schedule);
}

MethodEntry reuse_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{
      "reuse",
      {
          {"inner", T::kRule, 0, 0, {}, true, "", "the method whose plans are kept, e.g. (topk:k=8)"},
          {"every", T::kInt, 0, 1000000, {}, false, "5", "re-plan after this many steps (0: only on drift)"},
          {"drift", T::kFloat, 0, 1e9, {}, false, "0",
           "> 0: also re-plan when q/k block means moved this much (relative); one host sync per call"},
      },
      "keeps each layer's plan of an inner method across steps, re-planning on a schedule or on drift"};
  return {spec, [](const RecipeRule& rule) {
            return make_reuse_method(make_attention_method(rule.rule_param("inner", attention_method_specs())),
                                     ReuseSchedule{rule.int_param("every"), rule.float_param("drift")});
          }};
}

}  // namespace ditkit
