// `draft` (DraftAttention, Shen et al. 2025): per call, q and k are mean-pooled per frame over
// pool x pool patches of the latent grid (cells), the softmax of the pooled scores is a
// low-resolution draft of the attention map, and each query cell keeps its top cells of that map
// (a share of them, or the fewest covering a share of its mass) plus its own. Tokens are
// reordered so that each cell's tokens are contiguous; a query block then keeps every key block
// that touches a cell selected by a cell it touches (exact at the block level, also where edge
// cells are partial and blocks straddle cells). execute_plan restores the order.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "kernels/token_permute.h"
#include "sparse/grid_cache.h"
#include "sparse/method_registry.h"

namespace ditkit {

namespace {

struct DraftOptions {
  BlockShape blocks;
  int64_t pool;
  BlockSelection selection;  // top_k from `density` is set per grid (it depends on the cell count)
  double density;
};

// What a grid needs, built once per grid and device: none of it depends on q or k.
struct Layout {
  int64_t cells = 0;
  at::Tensor permutation;          // int64 [S]: tokens grouped by cell (frame, pool row, pool column)
  at::Tensor inverse_permutation;  // int64 [S]
  at::Tensor log_cell_tokens;      // float [C]: log of each cell's token count (edge cells have fewer)
  at::Tensor q_first, q_last;      // int64 [NQ]: the first and last cell a query block touches
  at::Tensor k_first, k_last;      // int64 [NK]: the same for key blocks
};

Layout make_layout(const LatentGrid& g, const DraftOptions& o, at::Device device) {
  const int64_t S = g.tokens(), p = o.pool;
  const int64_t cell_rows = (g.height + p - 1) / p, cell_cols = (g.width + p - 1) / p;
  auto opts = at::dtype(at::kLong).device(device);
  at::Tensor t = at::arange(S, opts);
  at::Tensor frame = t.div(g.height * g.width, "floor");
  at::Tensor row = t.div(g.width, "floor").remainder(g.height), col = t.remainder(g.width);
  at::Tensor cell = (frame * cell_rows + row.div(p, "floor")) * cell_cols + col.div(p, "floor");
  // A stable sort keeps each cell's tokens in frame-major order; computed on the device, so even
  // the first call needs no host-to-device copy.
  auto [sorted_cell, perm] = at::sort(cell, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  Layout l;
  l.cells = g.frames * cell_rows * cell_cols;
  l.permutation = perm;
  l.inverse_permutation = invert_permutation(perm);
  at::Tensor rows = at::clamp_max(g.height - at::arange(cell_rows, opts) * p, p);
  at::Tensor cols = at::clamp_max(g.width - at::arange(cell_cols, opts) * p, p);
  l.log_cell_tokens = (rows.view({-1, 1}) * cols.view({1, -1})).view(-1).repeat({g.frames}).to(at::kFloat).log();
  // Over the permuted tokens the cell ids ascend, so a block's cells are one contiguous range.
  auto ranges = [&](int64_t block) {
    at::Tensor first = at::arange((S + block - 1) / block, opts) * block;
    at::Tensor last = at::clamp_max(first + block, S) - 1;
    return std::make_pair(sorted_cell.index_select(0, first), sorted_cell.index_select(0, last));
  };
  std::tie(l.q_first, l.q_last) = ranges(o.blocks.q_block);
  std::tie(l.k_first, l.k_last) = ranges(o.blocks.k_block);
  return l;
}

// x [B, S, H, D] -> [B, C, H, D], the mean over each cell's tokens. Pooling the columns of each
// latent row and then the rows of each cell is exact for partial edge cells too: every row of a
// cell averages the same number of columns.
at::Tensor cell_mean_pool(const at::Tensor& x, const LatentGrid& g, int64_t pool) {
  const int64_t B = x.size(0), H = x.size(2), D = x.size(3);
  at::Tensor by_row = block_mean_pool(x.reshape({B * g.frames * g.height, g.width, H, D}), pool);
  const int64_t cell_cols = by_row.size(1);
  at::Tensor by_cell = block_mean_pool(by_row.reshape({B * g.frames, g.height, cell_cols * H, D}), pool);
  return by_cell.reshape({B, -1, H, D});
}

// keep bool [B, H, C, C] over cells -> bool [B, H, NQ, NK]: query block i keeps key block j when
// some cell i touches selected some cell j touches. Both ranges are contiguous, so "any over a
// range" is a difference of prefix sums, first along the key cells, then along the query cells.
at::Tensor cell_to_block_mask(const at::Tensor& keep, const Layout& l) {
  at::Tensor by_key = at::constant_pad_nd(keep.to(at::kInt).cumsum(3, at::kInt), {1, 0});
  at::Tensor key_blocks = (by_key.index_select(3, l.k_last + 1) - by_key.index_select(3, l.k_first)).gt(0);
  at::Tensor by_query = at::constant_pad_nd(key_blocks.to(at::kInt).cumsum(2, at::kInt), {0, 0, 1, 0});
  return (by_query.index_select(2, l.q_last + 1) - by_query.index_select(2, l.q_first)).gt(0);
}

class DraftMethod final : public AttentionMethod {
 public:
  explicit DraftMethod(DraftOptions options) : o_(options) {}
  std::string name() const override { return "draft"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    const LatentGrid& g = ctx.grid;
    TORCH_CHECK(g.tokens() == q.size(1), "draft: latent grid ", g.frames, "x", g.height, "x", g.width, " has ",
                g.tokens(), " tokens but q has ", q.size(1));
    const Layout& l = layout(g, q.device());
    // [B, H, C, C]; adding log n_c makes the softmax of each row the estimated share of the
    // attention mass falling in each key cell, so partial edge cells are not overrated.
    at::Tensor scores = block_scores(cell_mean_pool(q, g, o_.pool), cell_mean_pool(k, g, o_.pool),
                                     1.0 / std::sqrt(static_cast<double>(q.size(3))))
                            .add_(l.log_cell_tokens);
    // Cells as blocks of one: the diagonal is a cell's own cell and every "block" weighs 1.
    BlockSelection selection = o_.selection;
    if (o_.density > 0) selection.top_k = std::clamp<int64_t>(std::llround(o_.density * l.cells), 1, l.cells);
    // Through the CSR: on the GPU one kernel ranks every row of the draft map.
    at::Tensor keep = csr_to_mask(select_blocks_csr(scores, BlockGeometry{l.cells, 1, 1}, selection));
    Plan p;
    p.blocks = o_.blocks;
    p.csr = mask_to_csr(cell_to_block_mask(keep, l));
    p.permutation = l.permutation;
    p.inverse_permutation = l.inverse_permutation;
    return p;
  }

 private:
  const Layout& layout(const LatentGrid& g, at::Device device) {
    return layouts_.get(g, device, [&] { return make_layout(g, o_, device); });
  }

  DraftOptions o_;
  GridCache<Layout> layouts_;
};

}  // namespace

MethodEntry draft_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{
      "draft",
      {
          {"pool", T::kInt, 1, 256, {}, false, "8", "latent rows and columns pooled into one draft cell, per frame"},
          {"density", T::kFloat, 0, 1, {}, false, "0.1", "share of the draft cells kept per query cell (0: use mass)"},
          {"mass", T::kFloat, 0, 1, {}, false, "0.9", "share of the draft map's mass to keep when density=0"},
          {"kblock", T::kString, 0, 0, {"64", "128"}, false, "64", "key block size in tokens"},
      },
      "DraftAttention: a pooled low-resolution attention map per call picks the cells kept; tokens grouped by cell"};
  return {spec, [](const RecipeRule& rule) {
            const double density = rule.float_param("density"), mass = rule.float_param("mass");
            if (density <= 0 && mass <= 0)
              throw RecipeError("draft needs 'density' > 0 or 'mass' > 0 (at rule " + std::to_string(rule.position) +
                                ")");
            return std::make_unique<DraftMethod>(DraftOptions{BlockShape{128, std::stoll(rule.string_param("kblock"))},
                                                              rule.int_param("pool"),
                                                              BlockSelection{0, mass, true, 0}, density});
          }};
}

}  // namespace ditkit
