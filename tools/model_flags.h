// The flags dit-gen, dit-profile, dit-ab and dit-calibrate take the same way: the model folder,
// the device, the video size, steps, guidance and seed. Size, steps and guidance default to the
// model's own (ModelDefaults): only the flags given on the command line replace them. Also what
// the measuring tools share: finding the model folder, a run stopped after its last measured step.
#pragma once

#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/progress.h"
#include "pipelines/text_to_video.h"

namespace ditkit::tools {

// Seconds since `t0`, for the tools' timing lines.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// How guidance changes over the steps (SamplingOptions: a second scale below a sigma, a
// rescale), the same flags in every tool that generates. Their defaults change nothing.
struct GuidanceFlags {
  double boundary = 0, below = 1, rescale = 0;

  // Returns the options, for a tool that refuses them in a mode that does not generate.
  std::vector<CLI::Option*> add_to(CLI::App& app) {
    return {app.add_option("--guidance-boundary", boundary,
                           "steps with sigma below this use --guidance-below instead of --guidance (0: every step "
                           "uses --guidance)")
                ->check(CLI::Range(0.0, 1.0)),
            app.add_option("--guidance-below", below, "guidance scale below --guidance-boundary (1: none)")
                ->check(CLI::NonNegativeNumber),
            app.add_option("--guidance-rescale", rescale,
                           "pull the guided output's spread back toward the conditional one's, 0 (off) to 1")
                ->check(CLI::Range(0.0, 1.0))};
  }

  void apply(SamplingOptions& sampling) const {
    sampling.guidance_boundary = boundary;
    sampling.guidance_below = below;
    sampling.guidance_rescale = rescale;
  }

  // " (G below sigma S)", " rescaled R", both or "" as given, for a tool's settings line.
  std::string describe() const {
    std::string text;
    char part[64];
    if (boundary > 0) {
      std::snprintf(part, sizeof part, " (%g below sigma %g)", below, boundary);
      text += part;
    }
    if (rescale > 0) {
      std::snprintf(part, sizeof part, " rescaled %g", rescale);
      text += part;
    }
    return text;
  }
};

struct ModelFlags {
  std::string model;  // empty: the shipped default model
  std::string device = "auto";
  int width = 0, height = 0, frames = 0, steps = 0;
  double guidance = 0;
  GuidanceFlags guidance_steps;
  int64_t seed = 0;

  void add_to(CLI::App& app) {
    app.add_option("-m,--model", model,
                   "model folder (Wan2.1 diffusers layout, or a shipped-model folder); default: the shipped model")
        ->envname("DITKIT_MODEL");
    auto from_model = [](CLI::Option* option) { return option->default_str("the model's"); };
    width_ = from_model(app.add_option("--width", width, "video width in pixels")->check(CLI::PositiveNumber));
    height_ = from_model(app.add_option("--height", height, "video height in pixels")->check(CLI::PositiveNumber));
    frames_ = from_model(app.add_option("--frames", frames, "number of frames")->check(CLI::PositiveNumber));
    steps_ = from_model(app.add_option("--steps", steps, "denoising steps")->check(CLI::PositiveNumber));
    guidance_ = from_model(
        app.add_option("--guidance", guidance, "classifier-free guidance scale")->check(CLI::NonNegativeNumber));
    guidance_steps.add_to(app);
    app.add_option("--seed", seed, "noise seed (same noise on CPU and GPU)");
    app.add_option("--device", device, "auto, cpu or cuda[:N]")->envname("DITKIT_DEVICE");
  }

  // --model, or the shipped default model; std::invalid_argument with the user's message when
  // there is none or it is not a folder.
  std::string model_folder() const {
    std::string folder = model;
    try {
      if (folder.empty()) folder = find_default_model_folder();
    } catch (const ModelNotFound& e) {
      throw std::invalid_argument(std::string(e.what()) +
                                  "\n  pass --model DIR with a shipped-model folder or a Wan2.1 diffusers folder");
    }
    if (!std::filesystem::is_directory(folder)) throw std::invalid_argument("--model: '" + folder + "' is not a folder");
    return folder;
  }

  // The flags given, over the model's defaults in `gen`.
  void apply(TextToVideoOptions& gen) const {
    if (width_->count()) gen.width = width;
    if (height_->count()) gen.height = height;
    if (frames_->count()) gen.frames = frames;
    if (steps_->count()) gen.sampling.steps = steps;
    if (guidance_->count()) gen.sampling.guidance = guidance;
    guidance_steps.apply(gen.sampling);
    gen.sampling.seed = seed;
  }

  // --device (pipelines/device_flag.h); std::invalid_argument naming the flag when it names none.
  at::Device torch_device() const { return device_from_flag(device); }

  // The model in `folder` on --device, in bf16 on a GPU and fp32 on the CPU; std::invalid_argument
  // naming the flag at fault when the device or the model is wrong. `seconds`, where given, gets
  // the time loading took (the tools' timing line).
  std::unique_ptr<TextToVideo> load_pipeline(const std::string& folder, double* seconds = nullptr) const {
    const auto t0 = std::chrono::steady_clock::now();
    const at::Device d = torch_device();
    try {
      auto pipeline = std::make_unique<TextToVideo>(TextToVideo::load(folder, d, run_dtype(d)));
      if (seconds) *seconds = seconds_since(t0);
      return pipeline;
    } catch (const std::exception& e) {
      throw std::invalid_argument("--model '" + folder + "' cannot be loaded: " + e.what());
    }
  }

 private:
  CLI::Option *width_ = nullptr, *height_ = nullptr, *frames_ = nullptr, *steps_ = nullptr, *guidance_ = nullptr;
};

// Samples `gen` with `attention` (its observer measuring) through step `last` only, then stops:
// the steps after it and the decoder add nothing to a measuring run. One progress step a step.
inline void generate_through_step(TextToVideo& pipeline, const TextToVideoOptions& gen, RecipeAttention& attention,
                                  int last, Progress& progress) {
  try {
    pipeline.generate(gen, &attention, [&](int step, int) {
      progress.advance();
      return step < last;
    });
  } catch (const SamplingCancelled&) {
  }
}

}  // namespace ditkit::tools
