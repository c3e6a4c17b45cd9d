// The AttentionMethods through the recipe: at density 1 each equals dense; plans keep what they
// claim; permuted plans come back in the original token order.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "kernels/block_sparse_attention.h"
#include "kernels/dense_attention.h"
#include "kernels/token_permute.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"

namespace ditkit {
namespace {

bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return at::allclose(a.to(at::kCPU, at::kDouble), b.to(at::kCPU, at::kDouble), tol, tol);
}

std::unique_ptr<AttentionMethod> method(const std::string& recipe) {
  return make_attention_method(parse_recipe(recipe, attention_method_specs()).rules.at(0));
}

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
                             "window3d:t=3:h=7:w=9"}) {
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
  auto m = method("topk:k=2:diag=1");
  Plan plan = m->plan(x.q, x.k, context());
  ASSERT_FALSE(plan.dense);
  at::Tensor counts = plan.csr.row_offsets.diff();
  EXPECT_TRUE(counts.eq(2).all().item<bool>());
  AttentionOutput got = m->run(x.q, x.k, x.v, plan);
  AttentionOutput want = block_sparse_attention_reference(x.q, x.k, x.v, plan.csr, plan.blocks);
  EXPECT_TRUE(close(got.out, want.out, 1e-5));
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
  EXPECT_THROW(parse_recipe("svg", attention_method_specs()), RecipeError);
}

TEST(MethodsCuda, AtDensityOneEveryMethodEqualsDenseOnTheGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  Qkv x = random_qkv(2, kGrid.tokens(), 3, 64, at::kCUDA);
  AttentionOutput dense = dense_attention(x.q, x.k, x.v);
  for (std::string recipe : {"topk:k=1000", "topk:mass=1", "window3d:t=3:h=7:w=9"}) {
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
  for (std::string recipe : {"topk:k=2", "topk:mass=0.5:first=1", "window3d:t=1:h=2:w=2"}) {
    auto m = method(recipe);
    m->plan(x.q, x.k, context());  // warm-up: allocator pools, cached masks
    at::cuda::CUDAStream stream = at::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard guard(stream);
    at::cuda::CUDAGraph graph;
    std::string error;
    graph.capture_begin();
    try {
      m->plan(x.q, x.k, context());
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
