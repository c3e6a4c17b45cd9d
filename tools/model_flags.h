// The flags dit-gen, dit-profile and dit-ab take the same way: the model folder, the device, the
// video size, steps, guidance and seed. Size, steps and guidance default to the model's own
// (ModelDefaults): only the flags given on the command line replace them.
#pragma once

#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "pipelines/text_to_video.h"

namespace ditkit::tools {

struct ModelFlags {
  std::string model;  // empty: the shipped default model
  std::string device = "auto";
  int width = 0, height = 0, frames = 0, steps = 0;
  double guidance = 0;
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
    app.add_option("--seed", seed, "noise seed (same noise on CPU and GPU)");
    app.add_option("--device", device, "auto, cpu or cuda[:N]")->envname("DITKIT_DEVICE");
  }

  // The flags given, over the model's defaults in `gen`.
  void apply(TextToVideoOptions& gen) const {
    if (width_->count()) gen.width = width;
    if (height_->count()) gen.height = height;
    if (frames_->count()) gen.frames = frames;
    if (steps_->count()) gen.sampling.steps = steps;
    if (guidance_->count()) gen.sampling.guidance = guidance;
    gen.sampling.seed = seed;
  }

  // "auto": the first GPU if there is one, else the CPU. Throws c10::Error on a malformed name.
  at::Device torch_device() const {
    if (device != "auto") return at::Device(device);
    return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  }

 private:
  CLI::Option *width_ = nullptr, *height_ = nullptr, *frames_ = nullptr, *steps_ = nullptr, *guidance_ = nullptr;
};

}  // namespace ditkit::tools
