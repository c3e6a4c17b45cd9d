// `tile`: lists the tokens cube by cube (t frames x h rows x w columns of the latent grid) before
// an inner method ranks its blocks, so that a key block is a neighbourhood in space and time
// rather than a strip of rows of one frame. Sliding-tile and video-sparse attention order tokens
// this way; here it wraps the block rankers (topk, sla, or reuse of either): the inner method
// plans and runs over the tiled order (the plan carries the order, so run() and the learned
// weights are the inner method's) and the output comes back in frame-major order. With tiles
// of kblock tokens (4x4x4 for blocks of 64), each key block is exactly one tile.
#include <ATen/ATen.h>

#include <set>

#include "kernels/token_permute.h"
#include "sparse/grid_cache.h"
#include "sparse/method_registry.h"
#include "sparse/wrapped_method.h"

namespace ditkit {

namespace {

struct TileShape {
  int64_t frames, rows, cols;
};

struct Layout {
  at::Tensor permutation, inverse_permutation;  // int64 [S]
};

class TileMethod final : public WrappedMethod {
 public:
  TileMethod(std::unique_ptr<AttentionMethod> inner, TileShape tile) : WrappedMethod(std::move(inner)), tile_(tile) {}
  std::string name() const override { return "tile"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    const Layout& l = layout(q, ctx);
    return tiled(inner().plan(permute_tokens(q, l.permutation), permute_tokens(k, l.permutation), ctx), l);
  }

  // The inner method's own plan_and_run over the tiled tokens (sla's fused path included), with
  // each input gathered once.
  AttentionOutput plan_and_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionContext& ctx, Plan& made) override {
    const Layout& l = layout(q, ctx);
    const at::Tensor& perm = l.permutation;
    AttentionOutput out =
        inner().plan_and_run(permute_tokens(q, perm), permute_tokens(k, perm), permute_tokens(v, perm), ctx, made);
    made = tiled(std::move(made), l);
    return restore_token_order(std::move(out), l.inverse_permutation);
  }

 private:
  const Layout& layout(const at::Tensor& q, const AttentionContext& ctx) {
    const LatentGrid& g = ctx.grid;
    TORCH_CHECK(g.tokens() == q.size(1), "tile: latent grid ", g.frames, "x", g.height, "x", g.width, " has ",
                g.tokens(), " tokens but q has ", q.size(1));
    return layouts_.get(g, q.device(), [&] {
      Layout l;
      l.permutation = tile_permutation(g.frames, g.height, g.width, tile_.frames, tile_.rows, tile_.cols, q.device());
      l.inverse_permutation = invert_permutation(l.permutation);
      return l;
    });
  }

  // The inner plan, over tiled tokens, as a plan over frame-major ones (a dense plan needs no order).
  static Plan tiled(Plan p, const Layout& l) {
    if (p.dense) return p;
    p.permutation = l.permutation;
    p.inverse_permutation = l.inverse_permutation;
    return p;
  }

  TileShape tile_;
  GridCache<Layout> layouts_;
};

// The innermost method of `rule` through any reuse wrappers.
std::string innermost_method(RecipeRule rule) {
  while (rule.method == "reuse") rule = rule.rule_param("inner", attention_method_specs());
  return rule.method;
}

}  // namespace

MethodEntry tile_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{
      "tile",
      {
          {"inner", T::kRule, 0, 0, {}, true, "",
           "the method that ranks blocks of the tiled order: (topk:...) or (sla:...)"},
          {"t", T::kInt, 1, 1024, {}, false, "4", "frames per tile"},
          {"h", T::kInt, 1, 1024, {}, false, "4", "latent rows per tile"},
          {"w", T::kInt, 1, 1024, {}, false, "4", "latent columns per tile"},
      },
      "lists tokens tile by tile (t x h x w cubes of the latent grid), then the inner method's blocks over that order"};
  return {spec, [](const RecipeRule& rule) {
            RecipeRule inner = rule.rule_param("inner", attention_method_specs());
            // The others place blocks by the grid's frame-major layout, or reorder tokens themselves.
            static const std::set<std::string> rankers{"topk", "sla", "dense"};
            const std::string innermost = innermost_method(inner);
            if (!rankers.count(innermost))
              throw RecipeError("parameter 'inner' of method 'tile': '" + innermost +
                                "' places its blocks by the frame-major layout or reorders tokens itself; tile wraps "
                                "topk, sla or dense (or reuse of one) (at rule " + std::to_string(rule.position) + ")");
            const TileShape tile{rule.int_param("t"), rule.int_param("h"), rule.int_param("w")};
            return std::make_unique<TileMethod>(make_attention_method(inner), tile);
          }};
}

}  // namespace ditkit
