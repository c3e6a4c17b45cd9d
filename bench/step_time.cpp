// One denoising step of the Wan2.1-T2V-1.3B DiT (cond + uncond batched, B=2, 480x832, 81 frames,
// dense attention: cuDNN as diffusers uses it, and ditkit's own kernel, the `dense` recipe's
// default on Hopper) against diffusers timed in the same device run:
//   step_time --model DIR --diffusers RESULT.json [--out step-h100.jsonl] [--commit SHA] [--trace T.json]
// DIR holds the RANDOM weights step_diffusers.py saved; RESULT.json its timings. Writes two
// bench/results lines per attention path: against diffusers eager and against torch.compile'd. --trace
// saves a Kineto (chrome://tracing) trace of one more step, to see where the time goes.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/device_bench.h"
#include "dit/wan_transformer.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"

int main(int argc, char** argv) {
  std::string model_dir, diffusers_json, out_path = "step.jsonl", commit = "unknown", trace_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--model") model_dir = argv[i + 1];
    else if (flag == "--diffusers") diffusers_json = argv[i + 1];
    else if (flag == "--out") out_path = argv[i + 1];
    else if (flag == "--commit") commit = argv[i + 1];
    else if (flag == "--trace") trace_path = argv[i + 1];
    else {
      std::fprintf(stderr, "step_time: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (model_dir.empty() || diffusers_json.empty() || !at::hasCUDA()) {
    std::fprintf(stderr, "step_time: needs --model DIR --diffusers RESULT.json and a CUDA GPU\n");
    return 2;
  }
  nlohmann::json baseline = nlohmann::json::parse(std::ifstream(diffusers_json));
  std::printf("RANDOM WEIGHTS: timing the Wan2.1-T2V-1.3B configuration from %s\n", model_dir.c_str());
  c10::InferenceMode inference;
  auto model = ditkit::WanTransformer::load(model_dir, at::kCUDA, at::kBFloat16);

  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor latents = at::randn({2, 16, 21, 60, 104}, opts), context = at::randn({2, 512, 4096}, opts);
  at::Tensor timestep = at::full({2}, 999.0, at::dtype(at::kFloat).device(at::kCUDA));
  ditkit::RecipeAttention* attention = nullptr;
  auto step = [&] { model.forward(latents, timestep, context, attention); };
  for (const char* recipe : {"dense:kernel=cudnn", "dense"}) {
    ditkit::RecipeAttention recipe_attention(ditkit::parse_recipe(recipe, ditkit::attention_method_specs()));
    attention = &recipe_attention;
    ditkit::bench::reset_peak_memory();
    const double ours = ditkit::bench::median_ms(step, 2, 5);
    const double peak_gib = ditkit::bench::peak_memory_gib();
    const std::string path = std::string(recipe) == "dense" ? "dense-ditkit-kernel" : "dense-cudnn";
    std::printf("ditkit %s step %.1f ms, peak %.2f GiB\n", path.c_str(), ours, peak_gib);
    for (const char* which : {"eager", "compiled"}) {
      const double base = baseline[std::string(which) + "_ms"].get<double>();
      ditkit::bench::record(out_path, "step", commit,
                            {{"case", "wan2.1-1.3b random-weights B=2 (cond+uncond) 480x832x81 " + path + " bf16"},
                             {"impl", "ditkit"},
                             {"recipe", recipe},
                             {"value", ours},
                             {"unit", "ms"},
                             {"baseline_impl", std::string("diffusers-") + which},
                             {"baseline_value", base},
                             {"ratio", base / ours},
                             {"peak_gib", peak_gib},
                             {"baseline_peak_gib", baseline[std::string(which) + "_peak_gib"].get<double>()}});
    }
  }
  // The trace: the default recipe (the last one timed).
  ditkit::RecipeAttention dense(ditkit::parse_recipe("dense", ditkit::attention_method_specs()));
  attention = &dense;
  if (!trace_path.empty()) {
    namespace prof = torch::autograd::profiler;
    const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
    const std::set<torch::profiler::impl::ActivityType> activities{torch::profiler::impl::ActivityType::CPU,
                                                                   torch::profiler::impl::ActivityType::CUDA};
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
    step();
    cudaDeviceSynchronize();
    prof::disableProfiler()->save(trace_path);
    std::printf("trace of one step: %s\n", trace_path.c_str());
  }
  return 0;
}
