// The whole denoising loop on the tiny random Wan model of tests/data/wan_tiny: determinism,
// guidance batching, the guidance split and rescale, the recipe reaching the attention calls,
// cancellation, bad input.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "dit/wan_config.h"
#include "pipelines/flow_scheduler.h"
#include "pipelines/sampler.h"
#include "sparse/attention_method.h"

namespace ditkit {
namespace {

const WanTransformer& tiny_model() {
  static const WanTransformer model = WanTransformer::load(std::string(DITKIT_TEST_DATA) + "/wan_tiny", at::kCPU, at::kFloat);
  return model;
}

// 3 x 16 x 32 latents -> 3 x 8 x 16 = 384 tokens after 1x2x2 patches: several attention blocks.
const std::vector<int64_t> kLatent{1, 4, 3, 16, 32};

at::Tensor text(int64_t seed) {
  return seeded_noise({1, 7, tiny_model().config().text_dim}, seed, at::kCPU, at::kFloat);
}

SamplingOptions options(int steps, const std::string& scheduler = "unipc") {
  SamplingOptions o;
  o.steps = steps;
  o.scheduler = scheduler;
  o.guidance = 5.0;
  o.seed = 42;
  return o;
}

TEST(Sampler, SameSeedSameVideoOtherSeedOtherVideo) {
  at::Tensor a = sample(tiny_model(), kLatent, text(1), text(2), options(3));
  at::Tensor b = sample(tiny_model(), kLatent, text(1), text(2), options(3));
  SamplingOptions other = options(3);
  other.seed = 43;
  at::Tensor c = sample(tiny_model(), kLatent, text(1), text(2), other);
  EXPECT_EQ(a.sizes(), at::IntArrayRef(kLatent));
  EXPECT_TRUE(a.isfinite().all().item<bool>());
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::allclose(a, c));
}

// The sampler's Euler steps by hand from its noise, with the cond and uncond passes run apart:
// `guide(step, cond, uncond)` makes the model output each step takes.
using Guide = std::function<at::Tensor(int, const at::Tensor&, const at::Tensor&)>;
at::Tensor sample_by_hand(const SamplingOptions& o, const Guide& guide) {
  auto scheduler = make_flow_scheduler("euler", o.shift);
  scheduler->set_timesteps(o.steps);
  at::Tensor x = seeded_noise(kLatent, o.seed, at::kCPU, at::kFloat);
  for (int i = 0; i < o.steps; ++i) {
    at::Tensor t = at::full({1}, scheduler->timesteps()[i]);
    x = scheduler->step(guide(i, tiny_model().forward(x, t, text(1)), tiny_model().forward(x, t, text(2))), x);
  }
  return x;
}

TEST(Sampler, BatchedGuidanceEqualsSeparateCondAndUncondPasses) {
  SamplingOptions o = options(1, "euler");
  at::Tensor got = sample(tiny_model(), kLatent, text(1), text(2), o);
  at::Tensor want = sample_by_hand(o, [&](int, const at::Tensor& cond, const at::Tensor& uncond) {
    return uncond + o.guidance * (cond - uncond);
  });
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5));
}

TEST(Sampler, GuidanceBelowTheBoundaryReplacesTheScale) {
  SamplingOptions o = options(2, "euler");
  auto scheduler = make_flow_scheduler("euler", o.shift);
  scheduler->set_timesteps(2);
  o.guidance_boundary = (scheduler->sigmas()[0] + scheduler->sigmas()[1]) / 2;  // step 0 above, step 1 below
  o.guidance_below = 1.0;
  at::Tensor got = sample(tiny_model(), kLatent, text(1), text(2), o);
  at::Tensor want = sample_by_hand(o, [&](int step, const at::Tensor& cond, const at::Tensor& uncond) {
    return step == 0 ? uncond + o.guidance * (cond - uncond) : cond;
  });
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(got, sample(tiny_model(), kLatent, text(1), text(2), options(2, "euler")), 1e-4, 1e-4));
}

TEST(Sampler, GuidanceRescalePullsTheSpreadTowardTheConditionalOutput) {
  SamplingOptions o = options(1, "euler");
  o.guidance_rescale = 0.7;
  at::Tensor got = sample(tiny_model(), kLatent, text(1), text(2), o);
  at::Tensor want = sample_by_hand(o, [&](int, const at::Tensor& cond, const at::Tensor& uncond) {
    at::Tensor guided = uncond + o.guidance * (cond - uncond);
    at::Tensor rescaled = guided * (cond.std().item<double>() / guided.std().item<double>());
    return 0.7 * rescaled + 0.3 * guided;
  });
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(got, sample(tiny_model(), kLatent, text(1), text(2), options(1, "euler")), 1e-4, 1e-4));
}

// Contrastive guidance: a third pass on the contrast context, its difference from the conditional
// output added at its own scale, with and without classifier-free guidance; a contrast equal to
// the prompt changes nothing.
TEST(Sampler, ContrastGuidanceAddsTheScaledDifferenceFromTheContrastPass) {
  for (double guidance : {5.0, 1.0}) {
    SamplingOptions o = options(1, "euler");
    o.guidance = guidance;
    o.contrast_guidance = 2.5;
    at::Tensor got = sample(tiny_model(), kLatent, text(1), text(2), o, nullptr, {}, nullptr, text(3));
    auto scheduler = make_flow_scheduler("euler", o.shift);
    scheduler->set_timesteps(1);
    at::Tensor x = seeded_noise(kLatent, o.seed, at::kCPU, at::kFloat);
    at::Tensor t = at::full({1}, scheduler->timesteps()[0]);
    at::Tensor cond = tiny_model().forward(x, t, text(1)), uncond = tiny_model().forward(x, t, text(2)),
               contrast = tiny_model().forward(x, t, text(3));
    at::Tensor guided = guidance > 1 ? uncond + guidance * (cond - uncond) : cond;
    at::Tensor want = scheduler->step(guided + 2.5 * (cond - contrast), x);
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5)) << "guidance " << guidance;
    at::Tensor same = sample(tiny_model(), kLatent, text(1), text(2), o, nullptr, {}, nullptr, text(1));
    o.contrast_guidance = 0;
    EXPECT_TRUE(at::allclose(same, sample(tiny_model(), kLatent, text(1), text(2), o), 1e-5, 1e-5));
  }
}

// Stochastic Euler by hand: the deterministic step, then its noise estimate x + (1 − σ)·v swapped
// for the mix with the seed's fresh noise (a stream of its own, one draw a step).
TEST(Sampler, StochasticEulerMixesFreshNoiseIntoTheNoiseEstimate) {
  SamplingOptions o = options(2, "euler");
  o.eta = 0.6;
  at::Tensor got = sample(tiny_model(), kLatent, text(1), text(2), o);
  auto scheduler = make_flow_scheduler("euler", o.shift);
  scheduler->set_timesteps(2);
  at::Generator fresh = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o.seed) + 1);
  at::Tensor x = seeded_noise(kLatent, o.seed, at::kCPU, at::kFloat);
  for (int i = 0; i < 2; ++i) {
    at::Tensor t = at::full({1}, scheduler->timesteps()[i]);
    at::Tensor cond = tiny_model().forward(x, t, text(1)), uncond = tiny_model().forward(x, t, text(2));
    at::Tensor v = uncond + o.guidance * (cond - uncond);
    const double sigma = scheduler->sigmas()[i], next = scheduler->sigmas()[i + 1];
    at::Tensor x0 = x - sigma * v, eps = x + (1 - sigma) * v;
    at::Tensor z = at::randn(kLatent, fresh, at::dtype(at::kFloat));
    scheduler->step(v, x);  // keeps the scheduler's step index in line
    x = (1 - next) * x0 + next * (std::sqrt(1 - 0.36) * eps + 0.6 * z);
  }
  EXPECT_TRUE(at::allclose(got, x, 1e-4, 1e-4));
  EXPECT_FALSE(at::allclose(got, sample(tiny_model(), kLatent, text(1), text(2), options(2, "euler")), 1e-3, 1e-3));
}

TEST(Sampler, RecipePicksTheMethodPerStep) {
  auto specs = attention_method_specs();
  RecipeAttention dense(parse_recipe("dense", specs));
  RecipeAttention sparse_later(parse_recipe("dense@steps<1,topk:k=1:diag=1", specs));
  RecipeAttention sparse_never(parse_recipe("dense@steps<5,topk:k=1:diag=1", specs));
  at::Tensor a = sample(tiny_model(), kLatent, text(1), text(2), options(2), &dense);
  at::Tensor b = sample(tiny_model(), kLatent, text(1), text(2), options(2), &sparse_later);
  at::Tensor c = sample(tiny_model(), kLatent, text(1), text(2), options(2), &sparse_never);
  EXPECT_TRUE(at::allclose(a, c, 1e-6, 1e-6));  // steps 0 and 1 both dense
  EXPECT_FALSE(at::allclose(a, b, 1e-4, 1e-4));  // step 1 sparse: one key block per query block
}

TEST(Sampler, CallbackSeesEveryStepAndCanCancel) {
  std::vector<int> seen;
  sample(tiny_model(), kLatent, text(1), text(2), options(3), nullptr, [&](int step, int n) {
    seen.push_back(step);
    EXPECT_EQ(n, 3);
    return true;
  });
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), options(3), nullptr, [](int, int) { return false; }),
               SamplingCancelled);
}

TEST(Sampler, RejectsBadInput) {
  EXPECT_THROW(sample(tiny_model(), {1, 4, 3, 16}, text(1), text(2), options(2)), c10::Error);
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), options(0)), c10::Error);
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), at::Tensor(), options(2)), c10::Error);
  SamplingOptions boundary = options(2);
  boundary.guidance_boundary = 1.5;
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), boundary), c10::Error);
  SamplingOptions rescale = options(2);
  rescale.guidance_rescale = -0.5;
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), rescale), c10::Error);
  SamplingOptions contrast = options(2);
  contrast.contrast_guidance = 2;  // and no contrast context
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), contrast), c10::Error);
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), contrast, nullptr, {}, nullptr, at::zeros({1, 3, 4})),
               c10::Error);
  contrast.contrast_guidance = -1;
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), contrast, nullptr, {}, nullptr, text(3)), c10::Error);
  SamplingOptions eta = options(2);  // unipc
  eta.eta = 0.5;
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), eta), c10::Error);
  eta.scheduler = "euler";
  eta.eta = 1.5;
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), eta), c10::Error);
  SamplingOptions bad = options(2, "ddim");
  EXPECT_THROW(sample(tiny_model(), kLatent, text(1), text(2), bad), std::invalid_argument);
}

}  // namespace
}  // namespace ditkit
