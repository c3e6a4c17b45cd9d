// Denoising speed of the DiT split over N GPUs by sequence parallelism, against one GPU, at the
// Wan2.1-T2V-14B 720p shape (1280x720, 81 frames: latents 16x21x90x160, 75,600 tokens; cond and
// uncond batched, B = 2) with RANDOM weights (WanTransformer::random, the same seed on every rank):
//   seqpar_time --gpus 1 [--recipe R]... --baseline ONE.json              (one GPU, the plain path)
//   seqpar_time --gpus N [--recipe R]... --baseline ONE.json --out seqpar-h200.jsonl --commit SHA
//   (also: --model 14b|1.3b, --frames --height --width, --iters, --step, --num-steps)
// With --gpus 1 it times one forward per recipe without any process group and writes the times
// to --baseline. With N > 1 it starts N copies of itself as ranks (launch_ranks, as dit-gen does);
// each rank times the same forwards through SequenceParallel (ProcessGroupNCCL), and rank 0
// writes a bench/results line per recipe whose ratio is the one-GPU time over the N-GPU time.
// A step is timed by the wall clock between a barrier-and-synchronise before and a synchronise
// after, so it includes every collective; the median of --iters steps after one warm-up.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/device_bench.h"
#include "dit/sequence_parallel.h"
#include "dit/wan_transformer.h"
#include "pipelines/rank_launcher.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"

namespace {

struct Flags {
  int gpus = 1, iters = 3, step = 25, num_steps = 50;
  int64_t frames = 81, height = 720, width = 1280;
  std::string model = "14b";  // or "1.3b": the smaller DiT, whose random weights draw 10x faster
  std::vector<std::string> recipes;
  std::string baseline, out = "seqpar.jsonl", commit = "unknown";
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--gpus") f.gpus = std::stoi(value);
    else if (flag == "--recipe") f.recipes.push_back(value);
    else if (flag == "--baseline") f.baseline = value;
    else if (flag == "--out") f.out = value;
    else if (flag == "--commit") f.commit = value;
    else if (flag == "--iters") f.iters = std::stoi(value);
    else if (flag == "--step") f.step = std::stoi(value);
    else if (flag == "--num-steps") f.num_steps = std::stoi(value);
    else if (flag == "--frames") f.frames = std::stoll(value);
    else if (flag == "--height") f.height = std::stoll(value);
    else if (flag == "--width") f.width = std::stoll(value);
    else if (flag == "--model" && (value == "14b" || value == "1.3b")) f.model = value;
    else {
      std::fprintf(stderr, "seqpar_time: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (f.recipes.empty()) f.recipes = {"dense", "dense@steps<20%,svg"};
  if (f.baseline.empty() || f.gpus < 1 || f.iters < 1 || !at::hasCUDA()) {
    std::fprintf(stderr, "seqpar_time: needs --gpus N >= 1, --baseline FILE, --iters >= 1 and CUDA GPUs\n");
    return 2;
  }
  const std::optional<ditkit::RankPlace> place = f.gpus > 1 ? ditkit::rank_place_from_environment() : std::nullopt;
  if (f.gpus > 1 && !place) {  // the supervisor: start the ranks and wait
    if (f.gpus > int(at::getNumGPUs())) {
      std::fprintf(stderr, "seqpar_time: --gpus %d: only %d GPUs are visible\n", f.gpus, int(at::getNumGPUs()));
      return 2;
    }
    std::vector<std::string> args(argv, argv + argc);
    args[0] = std::filesystem::read_symlink("/proc/self/exe").string();
    const ditkit::LaunchResult result = ditkit::launch_ranks(args, f.gpus);
    if (!result.ok) std::fprintf(stderr, "seqpar_time: %s (the other ranks were stopped)\n", result.failure.c_str());
    return result.ok ? 0 : 1;
  }
  const bool rank0 = !place || place->rank == 0;
  const at::Device device(at::kCUDA, place ? static_cast<c10::DeviceIndex>(place->local_rank) : 0);
  std::optional<ditkit::SequenceParallel> parallel;
  if (place)
    parallel = ditkit::SequenceParallel::connect(place->master_addr, place->master_port, place->rank, place->world,
                                                 device);
  else
    ditkit::set_multicast_off_environment();

  c10::InferenceMode inference;
  // Wan2.1-T2V-14B: 40 layers, 40 heads x 128, ffn 13824; 1.3B: 30 layers, 12 heads x 128.
  const ditkit::WanConfig config = f.model == "14b" ? ditkit::WanConfig{} : ditkit::wan_config_1_3b();
  if (rank0)
    std::printf("RANDOM WEIGHTS: Wan2.1-T2V-%s configuration, %lldx%lld, %lld frames, B=2, on %d GPU(s)\n",
                f.model == "14b" ? "14B" : "1.3B", static_cast<long long>(f.width), static_cast<long long>(f.height),
                static_cast<long long>(f.frames), f.gpus);
  const auto model = ditkit::WanTransformer::random(config, 1, device, at::kBFloat16);
  const int64_t latent_frames = (f.frames - 1) / 4 + 1;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor latents =
      at::randn({2, config.in_channels, latent_frames, f.height / 8, f.width / 8}, gen).to(device, at::kBFloat16);
  const at::Tensor context = at::randn({2, 512, config.text_dim}, gen).to(device, at::kBFloat16);
  const at::Tensor timestep = at::full({2}, 500.0, at::dtype(at::kFloat).device(device));
  const int64_t tokens = model.token_grid(latent_frames, f.height / 8, f.width / 8).tokens();

  nlohmann::json baseline = nlohmann::json::object();
  if (f.gpus > 1) baseline = nlohmann::json::parse(std::ifstream(f.baseline));
  for (const std::string& recipe : f.recipes) {
    ditkit::RecipeAttention attention(ditkit::parse_recipe(recipe, ditkit::attention_method_specs()));
    attention.begin_run(static_cast<int>(config.num_layers), f.num_steps);
    std::vector<double> ms;
    ditkit::bench::reset_peak_memory();
    for (int i = 0; i <= f.iters; ++i) {  // the first is the warm-up
      if (parallel) parallel->barrier();
      at::cuda::getCurrentCUDAStream().synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      model.forward(latents, timestep, context, &attention, f.step, f.num_steps, parallel ? &*parallel : nullptr);
      at::cuda::getCurrentCUDAStream().synchronize();
      if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    const double step_ms = median(ms);
    if (!rank0) continue;
    std::printf("%s on %d GPU(s): %.1f ms a step, peak %.2f GiB on rank 0\n", recipe.c_str(), f.gpus, step_ms,
                ditkit::bench::peak_memory_gib());
    if (f.gpus == 1) {
      baseline[recipe] = step_ms;
      continue;
    }
    if (!baseline.contains(recipe)) {
      std::fprintf(stderr, "seqpar_time: %s has no one-GPU time for '%s'\n", f.baseline.c_str(), recipe.c_str());
      return 1;
    }
    const double one = baseline[recipe].get<double>();
    ditkit::bench::record(f.out, "seqpar", f.commit,
                          {{"case", "wan" + f.model + " " + std::to_string(f.width) + "x" + std::to_string(f.height) + "x" +
                                        std::to_string(f.frames) + " B=2 S=" + std::to_string(tokens) + " '" + recipe +
                                        "' step " + std::to_string(f.step) + "/" + std::to_string(f.num_steps)},
                           {"impl", "ditkit-seqpar-" + std::to_string(f.gpus) + "gpu"},
                           {"value", step_ms},
                           {"unit", "ms"},
                           {"baseline_impl", "ditkit-1gpu"},
                           {"baseline_value", one},
                           {"ratio", one / step_ms}});
  }
  if (f.gpus == 1) std::ofstream(f.baseline) << baseline.dump(2) << "\n";
  return 0;
}
