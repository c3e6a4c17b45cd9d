// `window3d`: a static spatial-temporal neighbourhood. Query block i keeps key block j when some
// query token of i and some key token of j lie within ±t frames, ±h rows and ±w columns of each
// other on the latent grid (exact per token pair, not a bounding-box guess). A baseline like
// sliding-tile attention and a building block for Sparse VideoGen's spatial mask.
#include <ATen/ATen.h>

#include <map>
#include <tuple>

#include "sparse/method_registry.h"

namespace ditkit {

namespace {

struct Window {
  int64_t t, h, w;
};

// bool [NQ, NK]: dilate each key block's token set by the window (a max-pool over the grid),
// then ask whether any token of the query block falls inside.
at::Tensor window_block_mask(const LatentGrid& g, BlockShape blocks, Window win, at::Device device) {
  const int64_t S = g.tokens();
  const int64_t NQ = (S + blocks.q_block - 1) / blocks.q_block, NK = (S + blocks.k_block - 1) / blocks.k_block;
  auto opts = at::dtype(at::kFloat).device(device);
  at::Tensor key_block = at::arange(S, opts.dtype(at::kLong)).div(blocks.k_block, "floor");
  at::Tensor members = (at::arange(NK, opts.dtype(at::kLong)).view({NK, 1}) == key_block.view({1, S})).to(at::kFloat);
  at::Tensor reach = at::max_pool3d(members.view({NK, 1, g.frames, g.height, g.width}),
                                    {2 * win.t + 1, 2 * win.h + 1, 2 * win.w + 1}, {1, 1, 1}, {win.t, win.h, win.w})
                         .view({NK, S});
  at::Tensor padded = at::constant_pad_nd(reach, {0, NQ * blocks.q_block - S});
  return padded.view({NK, NQ, blocks.q_block}).amax(-1).t().gt(0.5).contiguous();
}

class Window3dMethod final : public AttentionMethod {
 public:
  Window3dMethod(BlockShape blocks, Window win) : blocks_(blocks), win_(win) {}
  std::string name() const override { return "window3d"; }

  Plan plan(const at::Tensor& q, const at::Tensor&, const AttentionContext& ctx) override {
    const LatentGrid& g = ctx.grid;
    TORCH_CHECK(g.tokens() == q.size(1), "window3d: latent grid ", g.frames, "x", g.height, "x", g.width, " has ",
                g.tokens(), " tokens but q has ", q.size(1));
    // The mask depends only on the grid and batch/head counts: build it once per shape.
    auto key = std::make_tuple(g.frames, g.height, g.width, q.size(0), q.size(2), q.device().str());
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      at::Tensor mask = window_block_mask(g, blocks_, win_, q.device());
      Plan p;
      p.blocks = blocks_;
      p.csr = mask_to_csr(mask.view({1, 1, mask.size(0), mask.size(1)}).expand({q.size(0), q.size(2), -1, -1}));
      it = cache_.emplace(key, p).first;
    }
    return it->second;
  }

 private:
  BlockShape blocks_;
  Window win_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, std::string>, Plan> cache_;
};

}  // namespace

MethodEntry window3d_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{"window3d",
                  {
                      {"t", T::kInt, 0, 1000, {}, false, "1", "frames on each side"},
                      {"h", T::kInt, 0, 1000, {}, false, "4", "latent rows on each side"},
                      {"w", T::kInt, 0, 1000, {}, false, "4", "latent columns on each side"},
                      {"kblock", T::kString, 0, 0, {"64", "128"}, false, "64", "key block size in tokens"},
                  },
                  "static spatial-temporal neighbourhood on the latent grid"};
  return {spec, [](const RecipeRule& rule) {
            return std::make_unique<Window3dMethod>(
                BlockShape{128, std::stoll(rule.string_param("kblock"))},
                Window{rule.int_param("t"), rule.int_param("h"), rule.int_param("w")});
          }};
}

}  // namespace ditkit
