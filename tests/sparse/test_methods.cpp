// The AttentionMethods through the recipe: at density 1 each equals dense; plans keep what they
// claim; permuted plans come back in the original token order.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <tuple>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "kernels/block_csr.h"
#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "kernels/block_sparse_attention.h"
#include "kernels/dense_attention.h"
#include "kernels/token_permute.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"
#include "sparse/reuse.h"
#include "tests/sparse/method_test_support.h"

namespace ditkit {
namespace {

using testing_support::close;
using testing_support::method;

struct Qkv {
  at::Tensor q, k, v;
};
Qkv random_qkv(int64_t B, int64_t S, int64_t H, int64_t D, at::Device device = at::kCPU) {
  return {at::randn({B, S, H, D}).to(device), at::randn({B, S, H, D}).to(device), at::randn({B, S, H, D}).to(device)};
}

// Grid 3 x 7 x 9 = 189 tokens: partial last blocks for both block sizes.
const LatentGrid kGrid{3, 7, 9};

AttentionContext context() {
  AttentionContext ctx;
  ctx.grid = kGrid;
  return ctx;
}

// At density 1 (all blocks kept) every method is dense attention; fp32 on the CPU, tolerance 1e-5.
TEST(Methods, AtDensityOneEveryMethodEqualsDense) {
  Qkv x = random_qkv(2, kGrid.tokens(), 3, 64);
  AttentionOutput dense = dense_attention(x.q, x.k, x.v);
  for (std::string recipe : {"dense", "dense:kernel=cudnn", "topk:k=1000", "topk:mass=1", "topk:k=1000:kblock=128",
                             "topk:k=1000:kblock=32",
                             "window3d:t=3:h=7:w=9", "svg:frame_window=2:position_window=62",
                             "draft:density=1", "draft:pool=4:density=1:kblock=128", "draft:density=0:mass=1",
                             "paro:order=hwf:mass=1", "paro:order=whf.fhw.hfw:k=1000:kblock=128",
                             "paro:order=hwf:k=1000:kblock=32",
                             "reuse:inner=(topk:k=1000)", "sla:keep=1",
                             "sla:keep=1:kblock=128", "sla:keep=1:kblock=32", "topk:k=1000:qblock=64",
                             "sla:keep=1:qblock=64:kblock=32", "tile:inner=(topk:k=1000)",
                             "tile:t=2:h=3:w=5:inner=(sla:keep=1:kblock=32)"}) {
    auto m = method(recipe);
    Plan plan = m->plan(x.q, x.k, context());
    EXPECT_FLOAT_EQ(plan.density(at::kCPU).item<float>(), 1.0f) << recipe;
    AttentionOutput got = m->run(x.q, x.k, x.v, plan);
    EXPECT_TRUE(close(got.out, dense.out, 1e-5)) << recipe;
    EXPECT_TRUE(close(got.lse, dense.lse, 1e-5)) << recipe;
  }
}

TEST(Methods, TopkPlanKeepsKBlocksPerRowAndRunsThem) {
  Qkv x = random_qkv(1, kGrid.tokens(), 2, 32);
  for (const auto& [recipe, k, q_block, k_block] :
       {std::tuple{"topk:k=2:diag=1", 2, 128, 64}, std::tuple{"topk:k=4:kblock=32:diag=0", 4, 128, 32},
        std::tuple{"topk:k=2:qblock=64:diag=1", 2, 64, 64}, std::tuple{"topk:k=3:qblock=64:kblock=32", 3, 64, 32}}) {
    auto m = method(recipe);
    Plan plan = m->plan(x.q, x.k, context());
    ASSERT_FALSE(plan.dense);
    EXPECT_EQ(plan.blocks.q_block, q_block) << recipe;
    EXPECT_EQ(plan.blocks.k_block, k_block) << recipe;
    EXPECT_EQ(plan.csr.num_q_blocks, (kGrid.tokens() + q_block - 1) / q_block) << recipe;
    EXPECT_EQ(plan.csr.num_k_blocks, (kGrid.tokens() + k_block - 1) / k_block) << recipe;
    at::Tensor counts = plan.csr.row_offsets.diff();
    EXPECT_TRUE(counts.eq(k).all().item<bool>()) << recipe;
    // The selection is the reference's over this geometry, the diagonal blocks among it where asked.
    const at::Tensor scores = block_scores_reference(block_mean_pool_reference(x.q, q_block),
                                                     block_mean_pool_reference(x.k, k_block), 1.0 / std::sqrt(32.0));
    const BlockSelection selection{k, 0.9, std::string(recipe).find("diag=0") == std::string::npos, 0};
    EXPECT_TRUE(at::equal(csr_to_mask(plan.csr),
                          select_blocks_reference(scores, BlockGeometry{kGrid.tokens(), q_block, k_block}, selection)))
        << recipe;
    AttentionOutput got = m->run(x.q, x.k, x.v, plan);
    AttentionOutput want = block_sparse_attention_reference(x.q, x.k, x.v, plan.csr, plan.blocks);
    EXPECT_TRUE(close(got.out, want.out, 1e-5)) << recipe;
  }
}

TEST(Methods, Window3dKeepsNeighboursAndIsSymmetricInReach) {
  Qkv x = random_qkv(1, kGrid.tokens(), 1, 16);
  auto m = method("window3d:t=0:h=0:w=0:kblock=64");
  Plan plan = m->plan(x.q, x.k, context());
  // With a zero window each query block sees exactly the key blocks holding its own tokens.
  at::Tensor mask = csr_to_mask(plan.csr)[0][0];
  EXPECT_TRUE(at::equal(mask[0], at::tensor({1, 1, 0}).to(at::kBool)));
  EXPECT_TRUE(at::equal(mask[1], at::tensor({0, 0, 1}).to(at::kBool)));
  // A window of one frame reaches every block on this 3-frame grid from the middle frame.
  Plan wide = method("window3d:t=1:h=0:w=0")->plan(x.q, x.k, context());
  EXPECT_GT(wide.density(at::kCPU).item<float>(), plan.density(at::kCPU).item<float>());
  AttentionContext bad = context();
  bad.grid.frames = 4;
  EXPECT_THROW(m->plan(x.q, x.k, bad), c10::Error);
}

TEST(Plans, PermutedPlanReturnsOriginalOrder) {
  Qkv x = random_qkv(2, kGrid.tokens(), 2, 16);
  at::Tensor perm = axis_order_permutation(kGrid.frames, kGrid.height, kGrid.width, "hwf");
  Plan plan;
  plan.blocks = {128, 64};
  plan.permutation = perm;
  plan.inverse_permutation = invert_permutation(perm);
  // A block-diagonal map over the permuted tokens.
  plan.csr = mask_to_csr(at::eye(2, at::kBool).repeat_interleave(2, 1).narrow(1, 0, 3).expand({2, 2, 2, 3}).contiguous());
  AttentionOutput got = execute_plan(x.q, x.k, x.v, plan);
  AttentionOutput direct = block_sparse_attention_reference(permute_tokens(x.q, perm), permute_tokens(x.k, perm),
                                                            permute_tokens(x.v, perm), plan.csr, plan.blocks);
  EXPECT_TRUE(close(permute_tokens(got.out, perm), direct.out, 1e-5));
  // With every block kept, the order cannot matter: equals dense in the original order.
  plan.csr = mask_to_csr(at::ones({2, 2, 2, 3}, at::kBool));
  EXPECT_TRUE(close(execute_plan(x.q, x.k, x.v, plan).out, dense_attention(x.q, x.k, x.v).out, 1e-5));
  EXPECT_TRUE(close(execute_plan(x.q, x.k, x.v, plan).lse, dense_attention(x.q, x.k, x.v).lse, 1e-5));
}

TEST(RecipeAttention, PicksTheMethodPerStepAndLayer) {
  RecipeAttention attn(parse_recipe("dense@steps<20%,dense@layers=0,topk:k=2", attention_method_specs()));
  attn.check(4, 10);
  AttentionContext ctx = context();
  ctx.num_steps = 10;
  ctx.layer = 2;
  ctx.step = 1;
  EXPECT_EQ(attn.method_for(ctx).name(), "dense");
  ctx.step = 5;
  EXPECT_EQ(attn.method_for(ctx).name(), "topk");
  ctx.layer = 0;
  EXPECT_EQ(attn.method_for(ctx).name(), "dense");
  Qkv x = random_qkv(1, kGrid.tokens(), 2, 16);
  EXPECT_EQ(attn.forward(x.q, x.k, x.v, ctx).out.sizes(), x.q.sizes());
}

TEST(RecipeAttention, BadParametersNameThePosition) {
  EXPECT_THROW(parse_recipe("topk:kblock=96", attention_method_specs()), RecipeError);
  EXPECT_THROW(parse_recipe("topk:mass=1.5", attention_method_specs()), RecipeError);
  EXPECT_THROW(parse_recipe("svgg", attention_method_specs()), RecipeError);
}

TEST(RecipeAttention, BadSvgAndReuseParametersNameTheParameter) {
  for (auto [recipe, name] : std::vector<std::pair<std::string, std::string>>{
           {"svg:samples=0", "'samples'"},
           {"svg:frame_window=-1", "'frame_window'"},
           {"svg:position_window=-2", "'position_window'"},
           {"svg:kblock=96", "'kblock'"},
           {"reuse:every=3", "'inner'"},
           {"reuse:inner=topk", "'inner'"},
           {"reuse:every=-1:inner=(topk:k=2)", "'every'"},
           {"reuse:drift=-0.5:inner=(topk:k=2)", "'drift'"},
           {"reuse:inner=(svg:samples=1.5)", "'samples'"},
       }) {
    try {
      parse_recipe(recipe, attention_method_specs());
      ADD_FAILURE() << recipe << " parsed";
    } catch (const RecipeError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

// q = k = one code vector per frame (a head that attends within its frame) or per position (a
// head that attends to the same position in every frame): [B, S, 1, D] each.
at::Tensor coded_head(const LatentGrid& g, int64_t B, int64_t D, bool by_frame, double scale) {
  const int64_t per_frame = g.height * g.width;
  at::Tensor token = at::arange(g.tokens());
  at::Tensor codes = at::randn({by_frame ? g.frames : per_frame, D});
  codes = codes / codes.norm(2, -1, true) * scale;
  at::Tensor code_of = by_frame ? token.div(per_frame, "floor") : token.remainder(per_frame);
  return codes.index_select(0, code_of).view({1, g.tokens(), 1, D}).expand({B, -1, -1, -1}).contiguous();
}

// Heads 0 and 2 attend within their frame, head 1 along its position: [B, S, 3, D].
at::Tensor designed_heads(const LatentGrid& g, int64_t B, int64_t D) {
  return at::cat({coded_head(g, B, D, true, 6), coded_head(g, B, D, false, 8), coded_head(g, B, D, true, 6)}, 2);
}

TEST(MethodsSvg, ClassifiesDesignedSpatialAndTemporalHeads) {
  at::manual_seed(1);
  // 160 tokens a frame: a query block sits in one frame, so the spatial band is tight.
  const LatentGrid g{4, 8, 20};
  at::Tensor x = designed_heads(g, 2, 64);
  AttentionContext ctx;
  ctx.grid = g;
  for (std::string recipe : {"svg:frame_window=0", "svg:frame_window=0:kblock=128", "svg:frame_window=0:samples=16"}) {
    Plan plan = method(recipe)->plan(x, x, ctx);
    ASSERT_TRUE(plan.head_class.defined());
    EXPECT_TRUE(at::equal(plan.head_class, at::tensor({0, 1, 0}, at::kChar))) << recipe << " " << plan.head_class;
  }
}

// The masks written out token by token on the latent grid, then reduced to blocks: bool [NQ, NK].
// Spatial: frame-major tokens a, b with |frame(a) - frame(b)| <= fw. Temporal: position-major
// tokens (index = position·F + frame) with |position(a) - position(b)| <= pw.
at::Tensor expected_block_mask(const LatentGrid& g, BlockShape blocks, bool temporal, int64_t window) {
  const int64_t S = g.tokens(), NQ = (S + blocks.q_block - 1) / blocks.q_block;
  const int64_t NK = (S + blocks.k_block - 1) / blocks.k_block;
  const int64_t group = temporal ? g.frames : g.height * g.width;
  at::Tensor mask = at::zeros({NQ, NK}, at::kBool);
  auto m = mask.accessor<bool, 2>();
  for (int64_t a = 0; a < S; ++a)
    for (int64_t b = 0; b < S; ++b)
      if (std::abs(a / group - b / group) <= window) m[a / blocks.q_block][b / blocks.k_block] = true;
  return mask;
}

// Position-major index i holds frame-major token (i % F)·H·W + i / F.
at::Tensor position_major_order(const LatentGrid& g) {
  at::Tensor i = at::arange(g.tokens());
  return i.remainder(g.frames) * (g.height * g.width) + i.div(g.frames, "floor");
}

TEST(MethodsSvg, RunsExactlyItsBlocksOnAwkwardGrids) {
  at::manual_seed(2);
  bool saw[2] = {false, false};
  for (const LatentGrid& g : {LatentGrid{3, 7, 9}, LatentGrid{1, 9, 15}, LatentGrid{5, 3, 11}, LatentGrid{2, 10, 13}}) {
    for (auto [recipe, fw, pw] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
             {"svg:frame_window=0:position_window=2", 0, 2},
             {"svg:frame_window=1:position_window=5:kblock=128", 1, 5}}) {
      SCOPED_TRACE(recipe + " on " + std::to_string(g.frames) + "x" + std::to_string(g.height) + "x" +
                   std::to_string(g.width));
      const int64_t B = 2, S = g.tokens();
      // Designed heads plus a random one, so that both classes turn up.
      at::Tensor designed = designed_heads(g, B, 16);
      at::Tensor q = at::cat({designed, at::randn({B, S, 1, 16})}, 2);
      at::Tensor k = at::cat({designed, at::randn({B, S, 1, 16})}, 2);
      at::Tensor v = at::randn({B, S, 4, 16});
      AttentionContext ctx;
      ctx.grid = g;
      auto m = method(recipe);
      Plan plan = m->plan(q, k, ctx);
      AttentionOutput got = m->run(q, k, v, plan);
      at::Tensor mask = csr_to_mask(plan.csr);
      at::Tensor order = position_major_order(g);
      const at::Tensor block_masks[2] = {expected_block_mask(g, plan.blocks, false, fw),
                                         expected_block_mask(g, plan.blocks, true, pw)};
      for (int64_t h = 0; h < 4; ++h) {
        const bool temporal = plan.head_class[h].item<int8_t>() == 1;
        saw[temporal] = true;
        const at::Tensor& block_mask = block_masks[temporal];
        for (int64_t b = 0; b < B; ++b) EXPECT_TRUE(at::equal(mask[b][h], block_mask)) << "head " << h;
        // The reference on this head's tokens in its class's order, then back to frame-major.
        auto head = [&](const at::Tensor& t) {
          at::Tensor one = t.narrow(2, h, 1);
          return temporal ? one.index_select(1, order) : one;
        };
        BlockCsr csr = mask_to_csr_reference(block_mask.view({1, 1, block_mask.size(0), -1}).expand({B, 1, -1, -1}));
        AttentionOutput want = block_sparse_attention_reference(head(q), head(k), head(v), csr, plan.blocks);
        at::Tensor out = want.out, lse = want.lse;
        if (temporal) {
          out = at::empty_like(out).index_copy_(1, order, out);
          lse = at::empty_like(lse).index_copy_(2, order, lse);
        }
        EXPECT_TRUE(close(got.out.narrow(2, h, 1), out, 1e-5)) << "head " << h;
        EXPECT_TRUE(close(got.lse.narrow(1, h, 1), lse, 1e-5)) << "head " << h;
      }
    }
  }
  EXPECT_TRUE(saw[0] && saw[1]);
}

TEST(MethodsSvg, PermutationRoundTrips) {
  at::manual_seed(3);
  const LatentGrid g{5, 3, 11};
  at::Tensor x = designed_heads(g, 2, 16);
  AttentionContext ctx;
  ctx.grid = g;
  Plan plan = method("svg:frame_window=0")->plan(x, x, ctx);
  ASSERT_EQ(plan.permutation.sizes(), (at::IntArrayRef{3, g.tokens()}));
  at::Tensor identity = at::arange(g.tokens());
  for (int64_t h = 0; h < 3; ++h) {
    at::Tensor want = plan.head_class[h].item<int8_t>() ? position_major_order(g) : identity;
    EXPECT_TRUE(at::equal(plan.permutation[h], want)) << "head " << h;
    EXPECT_TRUE(at::equal(plan.permutation[h].index_select(0, plan.inverse_permutation[h]), identity));
  }
  at::Tensor v = at::randn({2, g.tokens(), 3, 8});
  EXPECT_TRUE(at::equal(permute_tokens(permute_tokens(v, plan.permutation), plan.inverse_permutation), v));
  EXPECT_TRUE(at::equal(permute_tokens(v, plan.permutation), permute_tokens_reference(v, plan.permutation)));
}

TEST(MethodsSvg, DenseWarmupThenSvgThroughTheRecipe) {
  RecipeAttention attn(parse_recipe("dense@steps<20%,svg", attention_method_specs()));
  attn.begin_run(2, 10);
  AttentionContext ctx;
  ctx.grid = {4, 8, 20};  // large enough frames for the bands to leave blocks out
  ctx.num_steps = 10;
  ctx.step = 1;
  EXPECT_EQ(attn.method_for(ctx).name(), "dense");
  Qkv x = random_qkv(2, ctx.grid.tokens(), 2, 16);
  EXPECT_TRUE(close(attn.forward(x.q, x.k, x.v, ctx).out, dense_attention(x.q, x.k, x.v).out, 1e-5));
  ctx.step = 2;
  ASSERT_EQ(attn.method_for(ctx).name(), "svg");
  Plan plan = attn.method_for(ctx).plan(x.q, x.k, ctx);
  EXPECT_EQ(plan.head_class.sizes(), (at::IntArrayRef{2}));
  EXPECT_LT(plan.density(at::kCPU).item<float>(), 1.0f);
  EXPECT_EQ(attn.forward(x.q, x.k, x.v, ctx).out.sizes(), x.q.sizes());
}

// Draft cells written out token by token: cell (frame, row / pool, column / pool), numbered
// frame-major. int64 [S].
at::Tensor draft_cell_of(const LatentGrid& g, int64_t pool) {
  const int64_t rows = (g.height + pool - 1) / pool, cols = (g.width + pool - 1) / pool;
  at::Tensor cell = at::empty({g.tokens()}, at::kLong);
  auto c = cell.accessor<int64_t, 1>();
  for (int64_t f = 0, t = 0; f < g.frames; ++f)
    for (int64_t h = 0; h < g.height; ++h)
      for (int64_t w = 0; w < g.width; ++w, ++t) c[t] = (f * rows + h / pool) * cols + w / pool;
  return cell;
}

TEST(MethodsDraft, PermutationGroupsCellsAndRoundTrips) {
  at::manual_seed(4);
  const LatentGrid g{2, 11, 13};
  Qkv x = random_qkv(1, g.tokens(), 2, 8);
  AttentionContext ctx;
  ctx.grid = g;
  Plan plan = method("draft:pool=4")->plan(x.q, x.k, ctx);
  ASSERT_EQ(plan.permutation.sizes(), (at::IntArrayRef{g.tokens()}));
  // Cells in order, each cell's tokens contiguous and in their frame-major order.
  at::Tensor cell = draft_cell_of(g, 4).index_select(0, plan.permutation);
  const int64_t cells = 2 * 3 * 4;
  EXPECT_TRUE(at::equal(cell, at::arange(cells).repeat_interleave(at::bincount(draft_cell_of(g, 4)))));
  at::Tensor same_cell = cell.narrow(0, 1, g.tokens() - 1) == cell.narrow(0, 0, g.tokens() - 1);
  EXPECT_TRUE((plan.permutation.diff() > 0).masked_select(same_cell).all().item<bool>());
  at::Tensor identity = at::arange(g.tokens());
  EXPECT_TRUE(at::equal(plan.permutation.index_select(0, plan.inverse_permutation), identity));
  EXPECT_TRUE(at::equal(permute_tokens(permute_tokens(x.v, plan.permutation), plan.inverse_permutation), x.v));
  AttentionContext bad = ctx;
  bad.grid.frames = 3;
  EXPECT_THROW(method("draft")->plan(x.q, x.k, bad), c10::Error);
}

// The draft selection recomputed in fp64 from the grid alone: cell means, scores + log(cell
// tokens), top-k (density) or mass per query cell, own cell always kept; then the block map over
// cell-grouped tokens as "some cell of the query block selected some cell of the key block".
// Returns the bool block map [B, H, NQ, NK] and the permutation it assumes.
std::pair<at::Tensor, at::Tensor> draft_oracle(const at::Tensor& q, const at::Tensor& k, const LatentGrid& g,
                                               int64_t pool, double density, double mass, BlockShape blocks) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  at::Tensor cell = draft_cell_of(g, pool);
  const int64_t C = cell.max().item<int64_t>() + 1;
  at::Tensor count = at::bincount(cell).to(at::kDouble);
  auto pooled = [&](const at::Tensor& x) {  // [B, H, C, D]
    return at::zeros({B, C, H, D}, at::kDouble).index_add_(1, cell, x.to(at::kDouble)).div(count.view({1, C, 1, 1})).transpose(1, 2);
  };
  at::Tensor scores = at::matmul(pooled(q), pooled(k).transpose(-1, -2)) / std::sqrt(double(D)) + count.log();
  at::Tensor sel = at::zeros({B, H, C, C}, at::kBool);
  auto s = scores.accessor<double, 4>();
  auto keep = sel.accessor<bool, 4>();
  const int64_t top = std::clamp<int64_t>(std::llround(density * C), 1, C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < C; ++i) {
        std::vector<int64_t> order(C);
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return s[b][h][i][a] > s[b][h][i][c]; });
        keep[b][h][i][i] = true;
        if (density > 0) {
          for (int64_t r = 0, kept = 1; r < C && kept < top; ++r)
            if (!keep[b][h][i][order[r]]) keep[b][h][i][order[r]] = true, ++kept;
          continue;
        }
        double total = 0, before = 0;
        for (int64_t j = 0; j < C; ++j) total += std::exp(s[b][h][i][j] - s[b][h][i][order[0]]);
        for (int64_t r = 0; r < C && before < mass; ++r) {
          keep[b][h][i][order[r]] = true;
          before += std::exp(s[b][h][i][order[r]] - s[b][h][i][order[0]]) / total;
        }
      }
  at::Tensor perm = std::get<1>(at::sort(cell * S + at::arange(S)));
  // Which cells each block of the cell-grouped order touches: [blocks, C].
  auto cells = cell.accessor<int64_t, 1>();
  auto order = perm.accessor<int64_t, 1>();
  auto touches = [&](int64_t block) {
    at::Tensor m = at::zeros({(S + block - 1) / block, C}, at::kDouble);
    auto ma = m.accessor<double, 2>();
    for (int64_t i = 0; i < S; ++i) ma[i / block][cells[order[i]]] = 1.0;
    return m;
  };
  at::Tensor block_map = at::matmul(at::matmul(touches(blocks.q_block), sel.to(at::kDouble)), touches(blocks.k_block).t()) > 0;
  return {block_map, perm};
}

TEST(MethodsDraft, RunsExactlyItsDraftSelectionOnAwkwardGrids) {
  at::manual_seed(5);
  float sparsest = 1;
  for (const LatentGrid& g : {LatentGrid{1, 11, 13}, LatentGrid{1, 19, 21}, LatentGrid{2, 9, 10}}) {
    for (auto [recipe, pool, density, mass] : std::vector<std::tuple<std::string, int64_t, double, double>>{
             {"draft:pool=4:density=0.1", 4, 0.1, 0},
             {"draft:pool=8:density=0.5:kblock=128", 8, 0.5, 0},
             {"draft:pool=3:density=0:mass=0.6", 3, 0, 0.6}}) {
      SCOPED_TRACE(recipe + " on " + std::to_string(g.frames) + "x" + std::to_string(g.height) + "x" +
                   std::to_string(g.width));
      const int64_t B = 2, S = g.tokens(), H = 3;
      Qkv x = random_qkv(B, S, H, 16);
      AttentionContext ctx;
      ctx.grid = g;
      auto m = method(recipe);
      Plan plan = m->plan(x.q, x.k, ctx);
      AttentionOutput got = m->run(x.q, x.k, x.v, plan);
      // The plan's own CSR over the permuted tokens, mapped back.
      const at::Tensor& perm = plan.permutation;
      AttentionOutput want = block_sparse_attention_reference(permute_tokens(x.q, perm), permute_tokens(x.k, perm),
                                                              permute_tokens(x.v, perm), plan.csr, plan.blocks);
      EXPECT_TRUE(close(got.out, permute_tokens(want.out, plan.inverse_permutation), 1e-5));
      EXPECT_TRUE(close(got.lse.transpose(1, 2).unsqueeze(-1),
                        permute_tokens(want.lse.transpose(1, 2).unsqueeze(-1), plan.inverse_permutation), 1e-5));
      // The independent oracle: same blocks, and masked attention token by token in fp64.
      auto [block_map, oracle_perm] = draft_oracle(x.q, x.k, g, pool, density, mass, plan.blocks);
      ASSERT_TRUE(at::equal(perm, oracle_perm));
      ASSERT_TRUE(at::equal(csr_to_mask(plan.csr), block_map));
      sparsest = std::min(sparsest, plan.density(at::kCPU).item<float>());
      at::Tensor position = invert_permutation(oracle_perm);
      at::Tensor allowed = block_map.index_select(2, position.div(plan.blocks.q_block, "floor"))
                               .index_select(3, position.div(plan.blocks.k_block, "floor"));  // [B, H, S, S]
      auto heads = [](const at::Tensor& t) { return t.to(at::kDouble).transpose(1, 2); };  // [B, H, S, D]
      at::Tensor scores = at::matmul(heads(x.q), heads(x.k).transpose(-1, -2)) / 4.0;
      scores = scores.masked_fill(allowed.logical_not(), -INFINITY);
      at::Tensor out = at::matmul(at::softmax(scores, -1), heads(x.v)).transpose(1, 2);
      EXPECT_TRUE(close(got.out, out, 1e-5));
      EXPECT_TRUE(close(got.lse, scores.logsumexp(-1), 1e-5));
    }
  }
  EXPECT_LT(sparsest, 0.7f);  // the grids are small, but not so small that everything is kept
}

TEST(MethodsDraft, SelectsTheCellsDesignedAttentionConcentratesIn) {
  at::manual_seed(6);
  // 2 frames of 2 x 3 cells of 8 x 8 tokens: 64-token key blocks are cells, 128-token query
  // blocks pairs of cells. Head h's query cell c looks for key cell (c + 5 + h) mod 12.
  const LatentGrid g{2, 16, 24};
  const int64_t B = 2, H = 3, D = 64, C = 12;
  at::Tensor cell = draft_cell_of(g, 8);
  at::Tensor u = at::randn({C, D});
  u = u / u.norm(2, -1, true);
  std::vector<at::Tensor> qs, ks;
  for (int64_t h = 0; h < H; ++h) {
    qs.push_back(u.index_select(0, (cell + 5 + h).remainder(C)) * 8);
    ks.push_back(u.index_select(0, cell));
  }
  at::Tensor q = at::stack(qs, 1).unsqueeze(0).expand({B, -1, -1, -1}) + 0.1 * at::randn({B, g.tokens(), H, D});
  at::Tensor k = at::stack(ks, 1).unsqueeze(0).expand({B, -1, -1, -1}) + 0.1 * at::randn({B, g.tokens(), H, D});
  AttentionContext ctx;
  ctx.grid = g;
  Plan plan = method("draft:density=0.17")->plan(q, k, ctx);  // 2 cells of 12: its own and its target
  at::Tensor mask = csr_to_mask(plan.csr);
  ASSERT_EQ(mask.sizes(), (at::IntArrayRef{B, H, C / 2, C}));
  for (int64_t h = 0; h < H; ++h) {
    at::Tensor want = at::zeros({C / 2, C}, at::kBool);
    auto w = want.accessor<bool, 2>();
    for (int64_t i = 0; i < C / 2; ++i)
      for (int64_t c : {2 * i, 2 * i + 1}) w[i][c] = w[i][(c + 5 + h) % C] = true;
    for (int64_t b = 0; b < B; ++b) EXPECT_TRUE(at::equal(mask[b][h], want)) << "head " << h << "\n" << mask[b][h];
  }
}

TEST(RecipeAttention, BadDraftParametersNameTheParameter) {
  for (auto [recipe, name] : std::vector<std::pair<std::string, std::string>>{
           {"draft:pool=0", "'pool'"},
           {"draft:pool=2.5", "'pool'"},
           {"draft:density=1.5", "'density'"},
           {"draft:mass=-0.1", "'mass'"},
           {"draft:kblock=96", "'kblock'"},
           {"draft:density=0:mass=0", "'density'"},
       }) {
    try {
      method(recipe);
      ADD_FAILURE() << recipe << " accepted";
    } catch (const RecipeError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

// Counts the plan() calls and resets of the method it wraps.
class Counting final : public AttentionMethod {
 public:
  explicit Counting(std::unique_ptr<AttentionMethod> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "counting"; }
  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    ++plans;
    return inner_->plan(q, k, ctx);
  }
  void reset() override { ++resets; }
  int plans = 0, resets = 0;

 private:
  std::unique_ptr<AttentionMethod> inner_;
};

TEST(MethodsReuse, ReplansOnTheScheduleAndReusesOtherwise) {
  auto counting = std::make_unique<Counting>(method("topk:k=2"));
  Counting& inner = *counting;
  auto reuse = make_reuse_method(std::move(counting), ReuseSchedule{3, 0.0});
  auto topk = method("topk:k=2");
  AttentionContext ctx = context();
  ctx.num_steps = 8;
  std::map<int, Plan> last;
  for (int step = 0; step < 8; ++step) {
    ctx.step = step;
    for (int layer : {0, 1}) {
      ctx.layer = layer;
      Qkv x = random_qkv(1, kGrid.tokens(), 2, 16);
      const int before = inner.plans;
      // Layer 0 through plan() then run(), layer 1 through plan_and_run(): the same schedule.
      Plan plan;
      AttentionOutput got;
      if (layer == 0) {
        plan = reuse->plan(x.q, x.k, ctx);
        got = reuse->run(x.q, x.k, x.v, plan);
      } else {
        got = reuse->plan_and_run(x.q, x.k, x.v, ctx, plan);
      }
      if (step % 3 == 0) {
        EXPECT_EQ(inner.plans, before + 1) << "step " << step;
        AttentionOutput want = topk->run(x.q, x.k, x.v, topk->plan(x.q, x.k, ctx));
        EXPECT_TRUE(at::equal(got.out, want.out)) << "step " << step;
        last[layer] = plan;
      } else {
        EXPECT_EQ(inner.plans, before) << "step " << step;
        EXPECT_TRUE(plan.csr.col_indices.is_same(last[layer].csr.col_indices));
        EXPECT_TRUE(at::equal(got.out, execute_plan(x.q, x.k, x.v, last[layer]).out));
      }
    }
  }
  EXPECT_EQ(inner.plans, 6);  // steps 0, 3, 6 for each of two layers
  reuse->reset();
  EXPECT_EQ(inner.resets, 1);
}

TEST(MethodsReuse, ReplansWhenQkDrift) {
  auto counting = std::make_unique<Counting>(method("topk:k=2"));
  Counting& inner = *counting;
  auto reuse = make_reuse_method(std::move(counting), ReuseSchedule{0, 0.1});
  AttentionContext ctx = context();
  ctx.num_steps = 4;
  Qkv x = random_qkv(1, kGrid.tokens(), 2, 16);
  reuse->plan(x.q, x.k, ctx);
  ctx.step = 1;
  reuse->plan(x.q * 1.02, x.k, ctx);  // block means move by 1%: kept
  EXPECT_EQ(inner.plans, 1);
  ctx.step = 2;
  reuse->plan(-x.q, x.k, ctx);  // q's block means flip: re-planned
  EXPECT_EQ(inner.plans, 2);
  ctx.step = 3;
  reuse->plan(-x.q, x.k, ctx);  // measured against the new plan's: kept
  EXPECT_EQ(inner.plans, 2);
}

TEST(MethodsReuse, ANewRunDropsTheKeptPlans) {
  RecipeAttention attn(parse_recipe("dense@steps<1,reuse:every=100:inner=(topk:k=2)", attention_method_specs()));
  Qkv x = random_qkv(1, kGrid.tokens(), 2, 16);
  AttentionContext ctx = context();
  ctx.num_steps = 4;
  auto plan_at = [&](int step) {
    ctx.step = step;
    return attn.method_for(ctx).plan(x.q, x.k, ctx).csr.col_indices;
  };
  attn.begin_run(1, 4);
  at::Tensor first = plan_at(1);
  EXPECT_TRUE(plan_at(2).is_same(first));
  // A new run must not get the kept plan back, though step 2 is within `every` of step 1.
  attn.begin_run(1, 4);
  at::Tensor second = plan_at(2);
  EXPECT_FALSE(second.is_same(first));
  EXPECT_TRUE(plan_at(3).is_same(second));
  // Without begin_run, steps going back or another shape start afresh too.
  EXPECT_FALSE(plan_at(1).is_same(second));
  ctx.step = 2;
  Qkv wider = random_qkv(2, kGrid.tokens(), 2, 16);
  at::Tensor kept = attn.method_for(ctx).plan(x.q, x.k, ctx).csr.col_indices;
  EXPECT_FALSE(attn.method_for(ctx).plan(wider.q, wider.k, ctx).csr.col_indices.is_same(kept));
}

TEST(MethodsCuda, AtDensityOneEveryMethodEqualsDenseOnTheGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  Qkv x = random_qkv(2, kGrid.tokens(), 3, 64, at::kCUDA);
  AttentionOutput dense = dense_attention(x.q, x.k, x.v);
  for (std::string recipe : {"topk:k=1000", "topk:mass=1", "window3d:t=3:h=7:w=9",
                             "svg:frame_window=2:position_window=62", "draft:density=1", "draft:pool=4:density=0:mass=1",
                             "paro:order=hwf:mass=1", "paro:order=whf.fhw.hfw:k=1000", "reuse:inner=(topk:k=1000)",
                             "sla:keep=1", "tile:inner=(topk:k=1000)"}) {
    auto m = method(recipe);
    AttentionOutput got = m->run(x.q, x.k, x.v, m->plan(x.q, x.k, context()));
    EXPECT_TRUE(close(got.out, dense.out, 2e-3)) << recipe;
  }
  // bf16, the model's GPU dtype: the Hopper kernel's paths (where it runs) against cuDNN.
  at::Tensor q = x.q.to(at::kBFloat16), k = x.k.to(at::kBFloat16), v = x.v.to(at::kBFloat16);
  auto library = method("dense:kernel=cudnn");
  AttentionOutput cudnn = library->run(q, k, v, library->plan(q, k, context()));
  for (std::string recipe : {"dense", "topk:k=1000:kblock=128", "topk:k=1000"}) {
    auto m = method(recipe);
    at::Tensor got = m->run(q, k, v, m->plan(q, k, context())).out.to(at::kDouble);
    const double err = (got - cudnn.out.to(at::kDouble)).norm().item<double>() / cudnn.out.to(at::kDouble).norm().item<double>();
    EXPECT_LT(err, 1e-2) << recipe;
  }
}


#if DITKIT_HAVE_CUDA
// Capturing into a CUDA graph fails on any host synchronisation (.item(), nonzero, a blocking
// copy), so a plan() that captures cleanly never stalls the host.
TEST(MethodsCuda, PlansBuildWithoutHostSynchronisation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  Qkv x = random_qkv(1, kGrid.tokens(), 2, 64, at::kCUDA);
  // reuse without drift re-plans on its schedule alone; with drift it reads one scalar back by design.
  for (std::string recipe : {"topk:k=2", "topk:mass=0.5:first=1", "topk:k=4:kblock=32", "window3d:t=1:h=2:w=2", "svg",
                             "svg:kblock=128",
                             "draft", "draft:pool=4:density=0:mass=0.5:kblock=128", "paro:order=hwf.whf:mass=0.5",
                             "reuse:every=1:inner=(svg)", "sla",
                             "sla:keep=0.3:kblock=128", "tile:inner=(sla:keep=0.3:kblock=128)"}) {
    auto m = method(recipe);
    m->plan(x.q, x.k, context());  // warm-up: allocator pools, cached masks
    at::cuda::CUDAStream stream = at::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard guard(stream);
    at::cuda::CUDAGraph graph;
    std::string error;
    graph.capture_begin();
    try {
      AttentionContext later = context();
      later.step = 1;  // reuse re-plans here
      m->plan(x.q, x.k, later);
    } catch (const std::exception& e) {
      error = e.what();
    }
    try {
      graph.capture_end();
    } catch (const std::exception& e) {
      error += e.what();
    }
    EXPECT_EQ(error, "") << recipe;
  }
}
#endif

}  // namespace
}  // namespace ditkit
