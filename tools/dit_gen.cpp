// dit-gen: text to video. `dit-gen --prompt "..." --out clip.mp4 [--model WAN_DIFFUSERS_DIR]`
//
// Without --model it uses the shipped default model (assets/default-model, found where the
// library looks: pipelines/model_location.h); if it is missing it says where it looked.
// `--gpus N` splits the tokens over N GPUs (docs/multi_gpu.md): dit-gen starts N copies of itself
// as ranks (pipelines/rank_launcher.h) and waits; rank 0 decodes and writes the video.
#include <ATen/ATen.h>
#include <torch/headeronly/version.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <chrono>

#include "ditkit_config.h"
#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/progress.h"
#include "pipelines/rank_launcher.h"
#include "pipelines/text_to_video.h"
#include "pipelines/video_writer.h"
#include "tools/model_flags.h"
#include "sparse/attention_method.h"

namespace fs = std::filesystem;

namespace {

struct GenOptions {
  std::string prompt;
  std::string negative_prompt;
  std::string out = "clip.mp4";
  ditkit::tools::ModelFlags run;
  std::string attention = "dense";
  int fps = 16, vae_chunk = 1, gpus = 1;
  double shift = 0;  // the model's unless given
};

void print_system_info() {
  std::fprintf(stderr, "ditkit %s | LibTorch %s | CUDA kernels %s | GPU %s | mp4 %s\n", DITKIT_VERSION_STRING,
               TORCH_VERSION, DITKIT_HAVE_CUDA ? "built" : "not built",
               at::hasCUDA() ? "available" : "none", DITKIT_HAVE_FFMPEG ? "yes" : "no (use .y4m or a PNG folder)");
}

// With --gpus N > 1 and no rank in the environment: checks what can be checked before starting
// anything, starts the N ranks and reports the first that fails. Returns the exit status.
int supervise_ranks(const GenOptions& o, int argc, char** argv) {
  const std::string& device = o.run.device;
  if (device != "cpu") {
    if (device != "auto" && device != "cuda") {
      std::fprintf(stderr, "dit-gen: --gpus %d: --device must be auto, cuda or cpu (rank r runs on cuda:r), got '%s'\n",
                   o.gpus, device.c_str());
      return 2;
    }
    const int visible = at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
    if (o.gpus > visible) {
      std::fprintf(stderr, "dit-gen: --gpus %d: only %d GPU%s visible%s\n", o.gpus, visible, visible == 1 ? " is" : "s are",
                   std::getenv("CUDA_VISIBLE_DEVICES") ? " (CUDA_VISIBLE_DEVICES is set)" : "");
      return 2;
    }
  }
  std::vector<std::string> args(argv, argv + argc);
  args[0] = fs::read_symlink("/proc/self/exe").string();
  const ditkit::LaunchResult result = ditkit::launch_ranks(args, o.gpus);
  if (!result.ok) {
    std::fprintf(stderr, "dit-gen: %s (the other ranks were stopped)\n", result.failure.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  GenOptions o;
  CLI::App app{"dit-gen: generate a video from a text prompt with a video diffusion transformer"};
  app.option_defaults()->always_capture_default();
  app.add_option("-p,--prompt", o.prompt, "what the video shows")->required();
  // Flags whose default is the model's: a Wan2.1 folder's are WanPipeline's, the shipped model's
  // are in its model_index.json.
  auto from_model = [&](CLI::Option* option) { return option->default_str("the model's"); };
  CLI::Option* negative =
      from_model(app.add_option("-n,--negative-prompt", o.negative_prompt, "what to steer away from"));
  app.add_option("-o,--out", o.out, "output: .mp4, .y4m, or a folder/ of PNG frames");
  app.add_option("-a,--attention", o.attention, "attention recipe, e.g. 'dense@steps<10,svg:density=0.15'");
  o.run.add_to(app);
  CLI::Option* shift =
      from_model(app.add_option("--shift", o.shift, "flow-matching shift")->check(CLI::PositiveNumber));
  app.add_option("--fps", o.fps, "frames per second of the output")->check(CLI::PositiveNumber);
  app.add_option("--vae-chunk", o.vae_chunk, "latent frames decoded at once (lower uses less memory)")
      ->check(CLI::PositiveNumber);
  app.add_option("--gpus", o.gpus,
                 "GPUs to split the video's tokens over (one process each, started by dit-gen); with --device "
                 "cpu, CPU processes")
      ->check(CLI::PositiveNumber);
  app.footer("Defaults marked \"the model's\": the shipped model's model_index.json, or diffusers' WanPipeline\n"
             "defaults for a Wan2.1 folder (832x480, 81 frames, 50 steps, guidance 5, its scheduler's shift).\n\n"
             "Attention methods for --attention (a recipe string or a .json file):\n" +
             ditkit::describe_methods(ditkit::attention_method_specs()));
  CLI11_PARSE(app, argc, argv);

  // A rank of a --gpus run finds its place in the environment (launch_ranks or torchrun set it).
  std::optional<ditkit::RankPlace> place;
  try {
    if (o.gpus > 1) place = ditkit::rank_place_from_environment();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dit-gen: --gpus %d: %s\n", o.gpus, e.what());
    return 2;
  }
  if (place && place->world != o.gpus) {
    std::fprintf(stderr, "dit-gen: --gpus %d, but WORLD_SIZE=%d in the environment\n", o.gpus, place->world);
    return 2;
  }
  const bool rank0 = !place || place->rank == 0;
  if (rank0) print_system_info();
  try {
    // Only what needs no model: syntax, methods, parameters, absolute ranges. Which layers and
    // steps the rules must cover is checked once the model is loaded (a check against one layer
    // here refused every recipe with rules for later layers, such as dit-calibrate's).
    ditkit::load_recipe(o.attention, ditkit::attention_method_specs());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dit-gen: --attention: %s\n", e.what());
    return 2;
  }
  std::string model = o.run.model;
  try {
    if (model.empty()) model = ditkit::find_default_model_folder();
  } catch (const ditkit::ModelNotFound& e) {
    std::fprintf(stderr,
                 "dit-gen: %s\n"
                 "  The shipped default model comes with the source tree (assets/default-model, made by dit-train)\n"
                 "  and is installed to <prefix>/share/ditkit/default-model. Set DITKIT_MODEL, or pass --model DIR\n"
                 "  with a shipped-model folder or a Wan2.1 text-to-video checkpoint in the diffusers layout.\n",
                 e.what());
    return 2;
  }
  if (!fs::is_directory(model)) {
    std::fprintf(stderr, "dit-gen: model folder '%s' does not exist\n", model.c_str());
    return 2;
  }
  if (o.gpus > 1 && !place) {
    try {
      return supervise_ranks(o, argc, argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dit-gen: --gpus %d: %s\n", o.gpus, e.what());
      return 1;
    }
  }
  const std::string who = place ? "dit-gen: rank " + std::to_string(place->rank) + ": " : "dit-gen: ";
  try {
    const at::Device device = !place ? o.run.torch_device()
                              : o.run.device == "cpu" ? at::Device(at::kCPU)
                                                      : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(place->local_rank));
    const at::ScalarType dtype = ditkit::run_dtype(device);
    // Joined before loading: it makes the rank's GPU the current device, which kernels launch on.
    std::optional<ditkit::SequenceParallel> parallel;
    if (place)
      parallel = ditkit::SequenceParallel::connect(place->master_addr, place->master_port, place->rank, place->world,
                                                   device);
    auto t0 = std::chrono::steady_clock::now();
    ditkit::TextToVideo pipeline = ditkit::TextToVideo::load(model, device, dtype);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    ditkit::TextToVideoOptions gen = pipeline.default_options();
    gen.prompt = o.prompt;
    if (negative->count()) gen.negative_prompt = o.negative_prompt;
    o.run.apply(gen);
    if (shift->count()) gen.sampling.shift = o.shift;
    gen.vae_chunk = o.vae_chunk;
    if (rank0)
      std::fprintf(stderr,
                   "dit-gen: %s on %s%s (%s), %lldx%lld, %lld frames, %d steps, guidance %g%s, shift %g, attention '%s'\n",
                   model.c_str(), device.str().c_str(),
                   place ? (", rank 0 of " + std::to_string(place->world)).c_str() : "",
                   c10::toString(dtype), static_cast<long long>(gen.width), static_cast<long long>(gen.height),
                   static_cast<long long>(gen.frames), gen.sampling.steps, gen.sampling.guidance,
                   o.run.guidance_steps.describe().c_str(), gen.sampling.shift,
                   o.attention.c_str());
    ditkit::Recipe recipe = ditkit::load_recipe(o.attention, ditkit::attention_method_specs());
    ditkit::check_recipe(recipe, static_cast<int>(pipeline.transformer().config().num_layers), gen.sampling.steps);
    ditkit::RecipeAttention attention(recipe);
    ditkit::Progress progress("denoise", gen.sampling.steps, stderr,
                              rank0 ? ditkit::Progress::Mode::kAuto : ditkit::Progress::Mode::kNever);
    at::Tensor frames = pipeline.generate(
        gen, &attention,
        [&](int, int) {
          progress.advance();
          return true;
        },
        parallel ? &*parallel : nullptr);
    if (!rank0) return 0;  // rank 0 decodes and writes
    progress.finish();

    t0 = std::chrono::steady_clock::now();
    ditkit::VideoOptions video;
    video.fps = o.fps;
    ditkit::write_video(frames, o.out, video);
    const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const ditkit::TextToVideoTimings& t = pipeline.timings();
    std::fprintf(stderr, "dit-gen: wrote %s (%lld frames %lldx%lld)\n", o.out.c_str(),
                 static_cast<long long>(frames.size(0)), static_cast<long long>(frames.size(2)),
                 static_cast<long long>(frames.size(1)));
    std::fprintf(stderr, "timings (s): load %.2f | text %.2f | denoise %.2f (%.3f per step) | decode %.2f | write %.2f\n",
                 load_s, t.text, t.denoise, t.denoise / gen.sampling.steps, t.decode, write_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return 1;
  }
  return 0;
}
