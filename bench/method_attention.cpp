// Each attention method against cuDNN dense attention at the Wan2.1-1.3B self-attention shape
// (B=2 cond+uncond, 12 heads of 128, 21x30x52 latent tokens = 32,760), measured in one run:
//   method_attention [--out results.jsonl] [--commit C] [--steps N] RECIPE...
// A RECIPE is one recipe rule (e.g. `topk:k=13:kblock=128`, `reuse:every=5:inner=(svg)`). Each
// is timed as the sampler calls it: plan_and_run() for N consecutive steps (default 10) of
// one layer, after reset(), so a reuse wrapper re-plans exactly when it would in a real run; the
// value is the mean per call. Also: the same steps through plan() then run() (what a method's
// plan_and_run() saves by sharing passes), the plan alone and the run alone (first step's plan),
// and the density the plans actually kept. q, k, v are random, so data-driven selections (topk, draft)
// find no structure to follow: only their cost and the density they keep are measured here. For a
// plan with a linear branch (sla) also that branch's stages on the CUDA path, each timed apart.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "bench/device_bench.h"
#include "kernels/complement_linear_attention.h"
#include "kernels/dense_attention.h"
#include "sparse/attention_method.h"

namespace {

// The median ms of each stage of a plan with a linear branch on its CUDA path (the softmax
// branch's kernel, with or without the combine fused, among them), over `iters` calls after
// `warmup`, between CUDA events recorded as each stage is enqueued. Empty for a plan without one
// or where the CUDA path does not run.
std::vector<std::pair<std::string, double>> linear_stage_ms(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const ditkit::Plan& plan, int warmup,
                                                            int iters) {
  const at::Tensor& w = plan.linear_projection;
  if (!w.defined() || !ditkit::projected_complement_linear_attention_uses_kernel(q, q, k, v, plan.blocks, w))
    return {};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<std::string> names;
  std::vector<cudaEvent_t> events;
  std::vector<std::vector<double>> ms;
  for (int i = 0; i < warmup + iters; ++i) {
    size_t n = 0;
    auto record = [&] {
      if (n == events.size()) cudaEventCreate(&events.emplace_back());
      cudaEventRecord(events[n++], stream);
    };
    record();
    ditkit::sparse_linear_attention(q, k, v, plan.csr, plan.blocks, w, plan.fuse_linear, [&](const char* stage) {
      if (names.size() < n) names.emplace_back(stage);
      record();
    });
    cudaEventSynchronize(events[n - 1]);
    if (i < warmup) continue;
    ms.resize(names.size());
    for (size_t s = 0; s < names.size(); ++s) {
      float t = 0;
      cudaEventElapsedTime(&t, events[s], events[s + 1]);
      ms[s].push_back(t);
    }
  }
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  std::vector<std::pair<std::string, double>> medians;
  for (size_t s = 0; s < names.size(); ++s) {
    std::sort(ms[s].begin(), ms[s].end());
    medians.emplace_back(names[s], ms[s][ms[s].size() / 2]);
  }
  return medians;
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed =
      ditkit::bench::parse_recipe_bench_args(argc, argv, "method_attention", {"methods.jsonl", "unknown", 10, {}});
  if (!parsed) return 2;
  const auto& [out_path, commit, steps, recipes] = *parsed;
  if (recipes.empty() || steps < 1 || !at::hasCUDA()) {
    std::fprintf(stderr, "method_attention: needs at least one RECIPE, --steps >= 1 and a CUDA GPU\n");
    return 2;
  }
  const ditkit::LatentGrid grid{21, 30, 52};
  const int64_t B = 2, S = grid.tokens(), H = 12, D = 128;
  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::randn({B, S, H, D}, opts), k = at::randn({B, S, H, D}, opts), v = at::randn({B, S, H, D}, opts);
  auto time = [](const std::function<void()>& fn) { return ditkit::bench::median_ms(fn, 2, 10); };
  const double dense_ms = time([&] { ditkit::dense_attention(q, k, v); });
  std::printf("cudnn dense: %.3f ms\n", dense_ms);

  for (const std::string& text : recipes) {
    const ditkit::Recipe recipe = ditkit::parse_recipe(text, ditkit::attention_method_specs());
    if (recipe.rules.size() != 1) {
      std::fprintf(stderr, "method_attention: %s: give one rule per argument\n", text.c_str());
      return 2;
    }
    auto method = ditkit::make_attention_method(recipe.rules[0]);
    ditkit::AttentionContext ctx;
    ctx.grid = grid;
    ctx.num_steps = steps;
    ctx.text_length = 512;
    // The density pass is apart from the timed one: plan.density() is a reduction of its own.
    // `separately`: plan() then run(), which forgoes what a method's plan_and_run() shares.
    auto run_steps = [&](at::Tensor* density_sum, bool separately) {
      method->reset();
      for (int s = 0; s < steps; ++s) {
        ctx.step = s;
        ctx.timestep = 1000.0 * (steps - s) / steps;
        ditkit::Plan plan;
        if (separately) {
          plan = method->plan(q, k, ctx);
          method->run(q, k, v, plan);
        } else {
          method->plan_and_run(q, k, v, ctx, plan);
        }
        if (density_sum) *density_sum += plan.density(q.device());
      }
    };
    const double per_call_ms = time([&] { run_steps(nullptr, false); }) / steps;
    const double separate_ms = time([&] { run_steps(nullptr, true); }) / steps;
    at::Tensor density_sum = at::zeros({}, at::dtype(at::kFloat).device(at::kCUDA));
    run_steps(&density_sum, false);
    const double density = density_sum.item<double>() / steps;
    method->reset();
    ctx.step = 0;
    ditkit::Plan first;
    const double plan_ms = time([&] {
      method->reset();
      first = method->plan(q, k, ctx);
    });
    const double run_ms = time([&] { method->run(q, k, v, first); });
    std::printf("%s: %.3f ms a call (plan %.3f, run %.3f; plan() then run() %.3f), density %.4f, %.2fx cuDNN\n",
                text.c_str(), per_call_ms, plan_ms, run_ms, separate_ms, density, dense_ms / per_call_ms);
    nlohmann::json fields = {{"case", "wan2.1-1.3b self-attention B=2 H=12 S=32760 D=128 bf16, " +
                                          std::to_string(steps) + " steps of one layer"},
                             {"impl", "ditkit"},
                             {"recipe", ditkit::to_string(recipe)},
                             {"value", per_call_ms},
                             {"unit", "ms"},
                             {"plan_ms", plan_ms},
                             {"run_ms", run_ms},
                             {"plan_then_run_ms", separate_ms},
                             {"density", density},
                             {"baseline_impl", "cudnn-dense"},
                             {"baseline_value", dense_ms},
                             {"ratio", dense_ms / per_call_ms}};
    const auto stages = linear_stage_ms(q, k, v, first, 2, 10);
    for (size_t i = 0; i < stages.size(); ++i) {
      const auto& [name, ms] = stages[i];
      std::printf("%s%s %.3f ms%s", i == 0 ? "  by stage: " : "", name.c_str(), ms,
                  i + 1 < stages.size() ? ", " : "\n");
      fields["stage_ms"][name] = ms;
    }
    ditkit::bench::record(out_path, "method-attention", commit, fields);
  }
  return 0;
}
