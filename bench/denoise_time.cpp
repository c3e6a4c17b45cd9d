// End-to-end denoising at the Wan2.1-T2V-1.3B shape (480x832, 81 frames, 50 UniPC steps,
// guidance 5: cond + uncond batched, B=2) with RANDOM weights, each recipe against ditkit's own
// dense pipeline timed in the same run:
//   denoise_time [--steps N] [--out results.jsonl] [--commit C] RECIPE...
// Times the whole sample() call (every step, dense warm-up steps and re-plans included) from the
// same noise and text embeddings, after the first two steps of an untimed run of the same recipe
// (kernel set-up, allocator), and records each step's GPU time so that warm-up, plan and reuse
// steps can be told apart.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench/device_bench.h"
#include "dit/wan_transformer.h"
#include "pipelines/sampler.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"

namespace {

struct Timed {
  double total_ms = 0;
  std::vector<double> step_ms;
};

Timed time_sampling(const ditkit::WanTransformer& model, const std::string& recipe_text, int steps,
                    const at::Tensor& context, const at::Tensor& uncond) {
  ditkit::RecipeAttention attention(ditkit::load_recipe(recipe_text, ditkit::attention_method_specs()));
  const std::vector<int64_t> shape{1, 16, 21, 60, 104};
  ditkit::SamplingOptions options;
  options.guidance = 5.0;
  options.shift = 3.0;
  options.seed = 0;
  options.steps = steps;
  try {  // the warm-up: the same run cancelled after two steps, so the recipe sees the real step count
    ditkit::sample(model, shape, context, uncond, options, &attention, [](int step, int) { return step < 1; });
  } catch (const ditkit::SamplingCancelled&) {
  }

  auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<cudaEvent_t> events(steps + 1);
  for (auto& e : events) cudaEventCreate(&e);
  cudaDeviceSynchronize();
  cudaEventRecord(events[0], stream);
  ditkit::sample(model, shape, context, uncond, options, &attention, [&](int step, int) {
    cudaEventRecord(events[step + 1], stream);
    return true;
  });
  cudaEventSynchronize(events[steps]);
  Timed t;
  for (int i = 0; i < steps; ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, events[i], events[i + 1]);
    t.step_ms.push_back(ms);
    t.total_ms += ms;
  }
  for (auto& e : events) cudaEventDestroy(e);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed =
      ditkit::bench::parse_recipe_bench_args(argc, argv, "denoise_time", {"denoise.jsonl", "unknown", 50, {}});
  if (!parsed) return 2;
  const auto& [out_path, commit, steps, recipes] = *parsed;
  if (recipes.empty() || steps < 2 || !at::hasCUDA()) {
    std::fprintf(stderr, "denoise_time: needs at least one RECIPE, --steps >= 2 and a CUDA GPU\n");
    return 2;
  }
  std::printf("RANDOM WEIGHTS: the Wan2.1-T2V-1.3B configuration, %d steps\n", steps);
  c10::InferenceMode inference;
  const auto model = ditkit::WanTransformer::random(ditkit::wan_config_1_3b(), 0, at::kCUDA, at::kBFloat16);
  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor context = at::randn({1, 512, 4096}, opts), uncond = at::randn({1, 512, 4096}, opts);

  const Timed dense = time_sampling(model, "dense", steps, context, uncond);
  std::printf("dense: %.1f ms (%.1f ms a step)\n", dense.total_ms, dense.total_ms / steps);
  for (const std::string& recipe : recipes) {
    const Timed t = time_sampling(model, recipe, steps, context, uncond);
    std::printf("%s: %.1f ms (%.1f ms a step), %.2fx dense\n", recipe.c_str(), t.total_ms, t.total_ms / steps,
                dense.total_ms / t.total_ms);
    ditkit::bench::record(out_path, "denoise", commit,
                          {{"case", "wan2.1-1.3b random-weights 480x832x81, " + std::to_string(steps) +
                                        " UniPC steps, guidance 5 (B=2), bf16"},
                           {"impl", "ditkit"},
                           {"recipe", recipe},
                           {"value", t.total_ms},
                           {"unit", "ms"},
                           {"step_ms", t.step_ms},
                           {"baseline_impl", "ditkit-dense"},
                           {"baseline_value", dense.total_ms},
                           {"ratio", dense.total_ms / t.total_ms}});
  }
  return 0;
}
