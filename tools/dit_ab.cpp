// dit-ab: the quality an attention recipe costs, against dense attention with the same seed.
// `dit-ab --recipe "topk:k=4" --out DIR [--prompt P ...] [--model DIR] [--steps N]`
//
// Generates each prompt twice through TextToVideo, dense and with the recipe, and reports frame
// PSNR/SSIM, per-layer attention error against dense on the same inputs, the density run, time
// per part and prompt adherence (pipelines/ab_compare.h lists the files written). Without
// --model it compares on the shipped default model.
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "pipelines/ab_compare.h"
#include "pipelines/attention_profile.h"
#include "pipelines/shipped_model.h"
#include "pipelines/text_to_video.h"
#include "tools/model_flags.h"
#include "sparse/attention_method.h"

namespace {

struct AbFlags {
  std::string recipe;
  std::vector<std::string> prompts{"a red circle moves slowly left on a blue background"};
  std::string out;
  ditkit::tools::ModelFlags run;
  int fps = 16;
};

int fail(const std::string& message, int code = 2) {
  std::fprintf(stderr, "dit-ab: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  AbFlags o;
  CLI::App app{"dit-ab: an attention recipe against dense attention, same prompt and seed: frames, attention "
               "error, density, time"};
  app.option_defaults()->always_capture_default();
  app.add_option("-r,--recipe", o.recipe, "attention recipe to compare with dense, e.g. 'topk:k=4'")->required();
  app.add_option("-p,--prompt", o.prompts, "what the video shows (repeat for several prompts)");
  app.add_option("-o,--out", o.out,
                 "output folder: report.json, report.html, psnr_NN.png, layer_error_NN.png, side_by_side_NN.y4m/.mp4")
      ->required();
  o.run.add_to(app);
  app.add_option("--fps", o.fps, "frames per second of the side-by-side video")->check(CLI::PositiveNumber);
  app.footer("Attention methods for --recipe (a recipe string or a .json file):\n" +
             ditkit::describe_methods(ditkit::attention_method_specs()));
  CLI11_PARSE(app, argc, argv);

  // Before any work: a recipe that does not parse, or a run that cannot write its results.
  try {
    // Only what needs no model: syntax, methods, parameters, absolute ranges. Which layers and
    // steps the rules must cover is checked once the model is loaded (a check against one layer
    // here refused every recipe with rules for later layers, such as dit-calibrate's).
    ditkit::load_recipe(o.recipe, ditkit::attention_method_specs());
  } catch (const std::exception& e) {
    return fail("--recipe: " + std::string(e.what()));
  }
  try {
    ditkit::prepare_profile_folder(o.out);
  } catch (const std::exception& e) {
    return fail("--out: " + std::string(e.what()));
  }
  std::string model;
  double load_s = 0;
  std::unique_ptr<ditkit::TextToVideo> pipeline;
  try {
    model = o.run.model_folder();
    pipeline = o.run.load_pipeline(model, &load_s);
  } catch (const std::invalid_argument& e) {
    return fail(e.what());
  }
  const at::Device device = pipeline->transformer().device();

  ditkit::AbOptions ab;
  ab.recipe = o.recipe;
  ab.prompts = o.prompts;
  ab.adherence = ditkit::is_shipped_model_folder(model);
  ditkit::TextToVideoOptions& gen = ab.generation;
  gen = pipeline->default_options();
  o.run.apply(gen);
  try {
    ditkit::check_recipe(ditkit::load_recipe(o.recipe, ditkit::attention_method_specs()),
                         static_cast<int>(pipeline->transformer().config().num_layers), gen.sampling.steps);
  } catch (const std::exception& e) {
    return fail("--recipe: " + std::string(e.what()));
  }

  std::fprintf(stderr, "dit-ab: '%s' against dense on %s (%s), %lldx%lld, %lld frames, %d steps, guidance %g, seed %lld\n",
               o.recipe.c_str(), model.c_str(), device.str().c_str(), static_cast<long long>(gen.width),
               static_cast<long long>(gen.height), static_cast<long long>(gen.frames), gen.sampling.steps,
               gen.sampling.guidance, static_cast<long long>(o.run.seed));
  std::vector<ditkit::PromptComparison> results;
  try {
    results = ditkit::compare_recipe_to_dense(*pipeline, ab,
                                              [](const std::string& line) { std::fprintf(stderr, "dit-ab: %s\n", line.c_str()); });
  } catch (const std::invalid_argument& e) {
    // Sizes the model cannot take: the message says which it can.
    return fail("--width/--height/--frames: " + std::string(e.what()));
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  try {
    ditkit::AbRun run{model, o.recipe, device.str(), o.run.seed, gen.sampling.steps, gen.sampling.guidance,
                      gen.sampling.shift, gen.frames, gen.height, gen.width, o.fps};
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<std::string> written = ditkit::write_ab_report(o.out, run, results);
    const double write_s = ditkit::tools::seconds_since(t0);
    std::fprintf(stderr, "dit-ab: wrote %zu files in %s (report.html, report.json, ...)\n", written.size(),
                 o.out.c_str());
    for (const ditkit::PromptComparison& r : results) {
      std::fprintf(stderr, "\"%s\": mean PSNR %.2f dB | SSIM %.4f | attention error %.4g | density %.3f\n",
                   r.prompt.c_str(), r.metrics.mean_psnr, r.metrics.mean_ssim, r.mean_error, r.mean_density);
      if (r.adherence.checked)
        std::fprintf(stderr, "  adherence: dense %s, recipe %s\n", r.adherence.dense.all_right ? "right" : "wrong",
                     r.adherence.recipe.all_right ? "right" : "wrong");
      else
        std::fprintf(stderr, "  adherence %s\n", r.adherence.note.c_str());
      for (const auto& [name, t] : {std::pair{"dense", r.dense_time}, std::pair{"recipe", r.recipe_time}})
        std::fprintf(stderr, "  timings %-6s (s): text %.2f | denoise %.2f (%.3f per step) | decode %.2f\n", name, t.text,
                     t.denoise, t.denoise / gen.sampling.steps, t.decode);
    }
    std::fprintf(stderr, "timings (s): load %.2f | write %.2f\n", load_s, write_s);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
