// `svg` (Sparse VideoGen, Xi et al. 2025): each head is either spatial (attends within its own
// frame and its neighbours) or temporal (attends to the same position, and a neighbourhood of
// positions, across all frames). Every call profiles a few sampled query rows to pick each head's
// class; spatial heads run a band of blocks over the frame-major tokens, temporal heads the same
// kind of band over position-major tokens (permuted per head, restored by execute_plan).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "kernels/token_permute.h"
#include "sparse/grid_cache.h"
#include "sparse/method_registry.h"

namespace ditkit {

namespace {

struct SvgOptions {
  BlockShape blocks;
  int64_t samples;          // query rows profiled per call
  int64_t frame_window;     // spatial heads: frames on each side of the query's own
  int64_t position_window;  // temporal heads: positions on each side; < 0: the spatial mask's budget
};

// bool [NQ, NK]: keep (i, j) when the groups of `group` consecutive tokens that query block i and
// key block j touch lie within `window` groups of each other. A block is a run of consecutive
// tokens and so touches a run of consecutive groups: the interval test is exact per token pair.
at::Tensor group_band_mask(int64_t S, BlockShape blocks, int64_t group, int64_t window, at::Device device) {
  auto opts = at::dtype(at::kLong).device(device);
  auto groups = [&](int64_t block) {  // first and last group of each block
    at::Tensor first = at::arange((S + block - 1) / block, opts) * block;
    at::Tensor last = at::clamp_max(first + block, S) - 1;
    return std::make_pair(first.div(group, "floor"), last.div(group, "floor"));
  };
  const auto [q_first, q_last] = groups(blocks.q_block);
  const auto [k_first, k_last] = groups(blocks.k_block);
  return k_first.view({1, -1}).le(q_last.view({-1, 1}) + window) & k_last.view({1, -1}).ge(q_first.view({-1, 1}) - window);
}

// What a grid needs, built once per grid and device: none of it depends on q or k.
struct Layout {
  at::Tensor spatial;         // bool [NQ, NK] over frame-major tokens
  at::Tensor temporal;        // bool [NQ, NK] over position-major tokens
  at::Tensor identity;        // int64 [S]
  at::Tensor position_major;  // int64 [S]: position-major index i holds frame-major token position_major[i]
  at::Tensor frame_major;     // its inverse
  at::Tensor rows;            // int64 [n]: the profiled query tokens (frame-major)
  at::Tensor spatial_keys;    // bool [n, S]: the keys (frame-major) each profiled row sees if its head is spatial
  at::Tensor temporal_keys;   // ... if temporal
};

Layout make_layout(const LatentGrid& g, const SvgOptions& o, at::Device device) {
  const int64_t S = g.tokens(), per_frame = g.height * g.width;
  // By default the temporal band keeps as many tokens as the spatial one (SVG sizes both masks to
  // the same budget), so that neither class wins only by keeping more.
  const int64_t position_window =
      o.position_window >= 0 ? o.position_window
                             : std::llround(((2 * o.frame_window + 1) * per_frame / double(g.frames) - 1) / 2);
  Layout l;
  l.spatial = group_band_mask(S, o.blocks, per_frame, o.frame_window, device);
  l.temporal = group_band_mask(S, o.blocks, g.frames, position_window, device);
  l.identity = at::arange(S, at::dtype(at::kLong).device(device));
  l.position_major = axis_order_permutation(g.frames, g.height, g.width, "hwf", device);
  l.frame_major = invert_permutation(l.position_major);
  // A golden-ratio (Weyl) sequence: deterministic, spread evenly over the sequence, and unlike a
  // fixed stride it does not alias with the grid's period (all rows on one column or one row).
  // 64 rows (the default) cost 64/S of the attention (0.2% at S = 32,760) yet put about three
  // rows in each of Wan's 21 frames, and the choice needs only the sign of the difference of two
  // kept masses averaged over all rows and the batch. Computed on the device: building the layout
  // needs no host-to-device copy either.
  const int64_t n = std::min(o.samples, S);
  const double phi = (std::sqrt(5.0) - 1) / 2;
  l.rows = at::frac(at::arange(n, at::dtype(at::kDouble).device(device)) * phi + 0.5).mul(double(S)).floor().to(at::kLong);
  l.spatial_keys = l.spatial.index_select(0, l.rows.div(o.blocks.q_block, "floor"))
                       .index_select(1, l.identity.div(o.blocks.k_block, "floor"));
  l.temporal_keys = l.temporal.index_select(0, l.frame_major.index_select(0, l.rows).div(o.blocks.q_block, "floor"))
                        .index_select(1, l.frame_major.div(o.blocks.k_block, "floor"));
  return l;
}

class SvgMethod final : public AttentionMethod {
 public:
  explicit SvgMethod(SvgOptions options) : o_(options) {}
  std::string name() const override { return "svg"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    const LatentGrid& g = ctx.grid;
    TORCH_CHECK(g.tokens() == q.size(1), "svg: latent grid ", g.frames, "x", g.height, "x", g.width, " has ",
                g.tokens(), " tokens but q has ", q.size(1));
    const Layout& l = layout(g, q.device());
    const int64_t B = q.size(0), H = q.size(2);
    // [B, H, n, S], the GEMM in q's dtype: only these n rows of the score matrix are ever formed.
    at::Tensor scores = at::matmul(q.index_select(1, l.rows).transpose(1, 2), k.permute({0, 2, 3, 1}))
                            .to(at::kFloat)
                            .mul_(1.0 / std::sqrt(static_cast<double>(q.size(3))));
    at::Tensor all = scores.logsumexp(-1);
    // float [H]: the share of the exact softmax mass the profiled rows keep under a class's keys,
    // averaged over rows and the batch. plan() sees no v, so the output error itself is not
    // measured; but 1 - kept is half the L1 error of the masked attention row, and bounds the
    // output error for any v: |o_masked - o| <= 2 (1 - kept) max |v|.
    auto kept = [&](const at::Tensor& keys) {
      return (scores.masked_fill(keys.logical_not(), -INFINITY).logsumexp(-1) - all).exp().mean(at::IntArrayRef{0, 2});
    };
    at::Tensor temporal = kept(l.temporal_keys) > kept(l.spatial_keys);
    Plan p;
    p.blocks = o_.blocks;
    p.head_class = temporal.to(at::kChar);
    at::Tensor mask = at::where(temporal.view({1, H, 1, 1}), l.temporal, l.spatial);
    p.csr = mask_to_csr(mask.expand({B, H, -1, -1}));
    // Spatial heads keep the frame-major order (an identity row): which heads permute is known only
    // on the device, and a per-head gather costs one pass over q, k, v and the output.
    p.permutation = at::where(temporal.view({H, 1}), l.position_major.view({1, -1}), l.identity.view({1, -1}));
    p.inverse_permutation = at::where(temporal.view({H, 1}), l.frame_major.view({1, -1}), l.identity.view({1, -1}));
    return p;
  }

 private:
  const Layout& layout(const LatentGrid& g, at::Device device) {
    return layouts_.get(g, device, [&] { return make_layout(g, o_, device); });
  }

  SvgOptions o_;
  GridCache<Layout> layouts_;
};

}  // namespace

MethodEntry svg_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{
      "svg",
      {
          {"samples", T::kInt, 1, 4096, {}, false, "64", "query rows profiled per call to classify the heads"},
          {"frame_window", T::kInt, 0, 1000, {}, false, "1", "spatial heads: frames on each side of the own frame"},
          {"position_window", T::kInt, -1, 1e9, {}, false, "-1",
           "temporal heads: positions (row-major h·W+w) on each side; -1: as many tokens as the spatial mask"},
          {"kblock", T::kString, 0, 0, {"64", "128"}, false, "64", "key block size in tokens"},
      },
      "Sparse VideoGen: per call, each head is classified spatial or temporal on sampled query rows"};
  return {spec, [](const RecipeRule& rule) {
            return std::make_unique<SvgMethod>(SvgOptions{BlockShape{128, std::stoll(rule.string_param("kblock"))},
                                                          rule.int_param("samples"), rule.int_param("frame_window"),
                                                          rule.int_param("position_window")});
          }};
}

}  // namespace ditkit
