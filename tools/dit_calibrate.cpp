// dit-calibrate: PARO's offline calibration. `dit-calibrate --prompt "..." [--prompt "..."]
// [--model DIR] [--mass 0.9] [--steps-to-calibrate 0,4,9] [--out FILE]`
//
// Runs the sampling loop for each prompt with dense attention and, at the chosen steps, measures
// per layer and head which of the six orders of the F, H, W axes packs the exact attention into
// the fewest key blocks at the target mass (pipelines/paro_calibration.h). Writes the recipe that
// runs `paro` with those orders (default: paro.recipe.json in the model folder, where
// `dit-gen --attention MODEL/paro.recipe.json` finds it by name) and beside it a report of every
// order's block count (NAME.calibration.json).
#include <ATen/ATen.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "dit/atomic_file.h"
#include "pipelines/attention_profile.h"
#include "pipelines/paro_calibration.h"
#include "pipelines/progress.h"
#include "pipelines/text_to_video.h"
#include "sparse/recipe_attention.h"
#include "tools/model_flags.h"

namespace fs = std::filesystem;

namespace {

struct CalibrateFlags {
  std::vector<std::string> prompts;
  std::string out, report;  // "": in the model folder; beside --out
  ditkit::tools::ModelFlags run;
  std::vector<int> steps_to_calibrate;  // empty: first, middle and last
  double mass = 0.9;
  int k_block = 64;
};

int fail(const std::string& message, int code = 2) {
  std::fprintf(stderr, "dit-calibrate: %s\n", message.c_str());
  return code;
}

// Why a file cannot be written at `path` ("" when it can): its folder must exist and be writable,
// and the path must not be a folder.
std::string unwritable(const std::string& path) {
  const fs::path p(path);
  const std::string folder = p.has_parent_path() ? p.parent_path().string() : ".";
  std::error_code ec;
  if (p.filename().empty() || fs::is_directory(p, ec)) return "'" + path + "' is a folder, not a file name";
  if (!fs::is_directory(folder, ec)) return "folder '" + folder + "' does not exist";
  if (::access(folder.c_str(), W_OK) != 0) return "folder '" + folder + "' is not writable";
  return "";
}

// paro.recipe.json -> paro.calibration.json; other names get ".calibration.json" after their stem.
std::string report_beside(const std::string& recipe_file) {
  std::string stem = recipe_file;
  for (const std::string suffix : {".json", ".recipe"})
    if (stem.size() > suffix.size() && stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0)
      stem.resize(stem.size() - suffix.size());
  return stem + ".calibration.json";
}

}  // namespace

int main(int argc, char** argv) {
  CalibrateFlags o;
  CLI::App app{"dit-calibrate: PARO's offline calibration, per layer and head the axis order that packs attention "
               "into the fewest blocks; writes a recipe"};
  app.option_defaults()->always_capture_default();
  app.add_option("-p,--prompt", o.prompts, "a calibration prompt (repeat for several)")->required();
  app.add_option("-o,--out", o.out, "the recipe file to write")->default_str("MODEL/paro.recipe.json");
  app.add_option("--report", o.report, "the report to write: every order's density per layer and head")
      ->default_str("beside --out, NAME.calibration.json");
  o.run.add_to(app);
  app.add_option("--mass", o.mass, "share of each query block's attention mass the blocks must hold")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--steps-to-calibrate", o.steps_to_calibrate, "step indices to measure, from 0, e.g. 0,15,29")
      ->delimiter(',')
      ->default_str("first, middle and last");
  app.add_option("--kblock", o.k_block, "key block size (query blocks are 128)")->check(CLI::IsMember({64, 128}));
  CLI11_PARSE(app, argc, argv);
  if (o.mass <= 0) return fail("--mass: 0 keeps no block; give a share in (0, 1], e.g. 0.9");

  std::string model;
  try {
    model = o.run.model_folder();
  } catch (const std::invalid_argument& e) {
    return fail(e.what());
  }
  // Before any work: a run that cannot write its results is not worth starting.
  if (o.out.empty()) o.out = (fs::path(model) / "paro.recipe.json").string();
  if (o.report.empty()) o.report = report_beside(o.out);
  if (const std::string why = unwritable(o.out); !why.empty()) return fail("--out: " + why);
  if (const std::string why = unwritable(o.report); !why.empty()) return fail("--report: " + why);
  if (fs::path(o.report) == fs::path(o.out)) return fail("--report: the same file as --out ('" + o.out + "')");

  const auto started = std::chrono::steady_clock::now();
  double load_s = 0;
  std::unique_ptr<ditkit::TextToVideo> pipeline;
  try {
    pipeline = o.run.load_pipeline(model, &load_s);
  } catch (const std::invalid_argument& e) {
    return fail(e.what());
  }
  const at::Device device = pipeline->transformer().device();

  ditkit::TextToVideoOptions gen = pipeline->default_options();
  o.run.apply(gen);
  std::vector<int> steps;
  try {
    steps = o.steps_to_calibrate.empty() ? ditkit::default_profile_steps(gen.sampling.steps)
                                         : ditkit::check_profile_steps(o.steps_to_calibrate, gen.sampling.steps);
  } catch (const std::exception& e) {
    return fail("--steps-to-calibrate: " + std::string(e.what()));
  }

  try {
    std::fprintf(stderr, "dit-calibrate: %s on %s, %lldx%lld, %lld frames, %d steps, guidance %g; %zu prompts; mass %g at steps",
                 model.c_str(), device.str().c_str(), static_cast<long long>(gen.width),
                 static_cast<long long>(gen.height), static_cast<long long>(gen.frames), gen.sampling.steps,
                 gen.sampling.guidance, o.prompts.size(), o.mass);
    for (int s : steps) std::fprintf(stderr, " %d", s);
    std::fprintf(stderr, "\n");

    ditkit::RecipeAttention attention(ditkit::load_recipe("dense", ditkit::attention_method_specs()));
    ditkit::ParoCalibrator calibrator(steps, ditkit::BlockShape{128, o.k_block}, o.mass);
    attention.set_observer(&calibrator);
    // Steps after the last calibrated one, and the decoder, add nothing: each run stops there.
    const int last = steps.back();
    ditkit::Progress progress("calibrate", static_cast<int64_t>(o.prompts.size()) * (last + 1));
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string& prompt : o.prompts) {
      gen.prompt = prompt;
      ditkit::tools::generate_through_step(*pipeline, gen, attention, last, progress);
    }
    progress.finish();
    const double run_s = ditkit::tools::seconds_since(t0);

    const std::vector<std::vector<std::string>> orders = ditkit::best_paro_orders(calibrator.mean_density());
    ditkit::write_text_file(o.out, ditkit::paro_recipe_json(orders, o.mass, o.k_block));
    ditkit::ParoCalibrationRun run{model, o.prompts, o.run.seed, gen.sampling.steps, gen.sampling.guidance,
                                   gen.sampling.shift, gen.frames, gen.height, gen.width, o.out};
    ditkit::write_text_file(o.report, ditkit::paro_calibration_report_json(run, calibrator));

    const at::Tensor density = calibrator.mean_density();
    std::fprintf(stderr, "dit-calibrate: density at mass %g, frame-major (fhw) -> chosen order, per layer:\n", o.mass);
    for (size_t l = 0; l < orders.size(); ++l) {
      std::fprintf(stderr, "  layer %zu:", l);
      for (size_t h = 0; h < orders[l].size(); ++h) {
        const at::Tensor row = density[l][h];
        std::fprintf(stderr, " %.3f->%s %.3f", row[0].item<double>(), orders[l][h].c_str(), row.min().item<double>());
      }
      std::fprintf(stderr, "\n");
    }
    std::fprintf(stderr, "dit-calibrate: wrote %s and %s\n", o.out.c_str(), o.report.c_str());
    std::fprintf(stderr, "timings (s): load %.2f | %zu prompts x %d steps with calibration %.2f | total %.2f\n", load_s,
                 o.prompts.size(), last + 1, run_s,
                 ditkit::tools::seconds_since(started));
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
