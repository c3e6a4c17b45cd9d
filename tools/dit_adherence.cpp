// dit-adherence: how often a shapes model draws what its prompt says. Generates one video per
// prompt drawn from the held-out caption facts (or the training split), checks each with the
// OpenCV adherence checker, prints one line per prompt and the share right, and writes a JSON
// report. `dit-adherence --count 32 --out adherence.json [--model DIR] [--attention RECIPE]`
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "dit/atomic_file.h"
#include "pipelines/adherence_eval.h"
#include "pipelines/model_location.h"
#include "pipelines/video_writer.h"
#include "sparse/attention_method.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string model, attention = "dense", device_name = "auto", split = "held-out", out = "adherence.json", videos;
  ditkit::AdherenceOptions o;
  int steps = 0;
  double guidance = -1;
  CLI::App app{"dit-adherence: prompt adherence of a shapes model, checked by looking at the frames"};
  app.option_defaults()->always_capture_default();
  app.add_option("-m,--model", model, "shapes model folder; default: the shipped model")->envname("DITKIT_MODEL");
  app.add_option("--count", o.count, "prompts to generate and check")->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "prompt i is drawn from seed + i and generated with noise seed seed + i");
  app.add_option("--split", split, "caption facts: held-out (combinations training never saw) or train")
      ->check(CLI::IsMember({"held-out", "train"}));
  app.add_option("-a,--attention", attention, "attention recipe");
  app.add_option("--steps", steps, "denoising steps (0: the model's)")->check(CLI::NonNegativeNumber);
  app.add_option("--guidance", guidance, "guidance scale (negative: the model's)");
  app.add_option("--device", device_name, "auto, cpu or cuda[:N]")->envname("DITKIT_DEVICE");
  app.add_option("-o,--out", out, "JSON report");
  app.add_option("--videos", videos, "also write each video as DIR/NNN.y4m (the folder must exist)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (model.empty()) model = ditkit::find_default_model_folder();
    if (!videos.empty() && !fs::is_directory(videos))
      throw std::invalid_argument("--videos '" + videos + "' is not an existing folder");
    const at::Device device =
        device_name == "auto" ? (at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU)) : at::Device(device_name);
    ditkit::TextToVideo pipeline =
        ditkit::TextToVideo::load(model, device, device.is_cuda() ? at::kBFloat16 : at::kFloat);
    o.split = split == "train" ? ditkit::Split::kTrain : ditkit::Split::kHeldOut;
    o.generation = pipeline.default_options();
    if (steps > 0) o.generation.sampling.steps = steps;
    if (guidance >= 0) o.generation.sampling.guidance = guidance;
    ditkit::Recipe recipe = ditkit::load_recipe(attention, ditkit::attention_method_specs());
    ditkit::check_recipe(recipe, int(pipeline.transformer().config().num_layers), o.generation.sampling.steps);
    ditkit::RecipeAttention recipe_attention(recipe);
    std::fprintf(stderr, "dit-adherence: %s on %s, %lld %s prompts, %d steps, guidance %g, attention '%s'\n",
                 model.c_str(), device.str().c_str(), (long long)o.count, split.c_str(), o.generation.sampling.steps,
                 o.generation.sampling.guidance, attention.c_str());

    const ditkit::AdherenceResult result = ditkit::measure_adherence(
        pipeline, o, &recipe_attention, [&](int64_t i, int64_t n, const ditkit::PromptResult& p, const at::Tensor& frames) {
          std::string wrong;
          for (const std::string& w : p.report.wrong) wrong += (wrong.empty() ? "" : "; ") + w;
          std::printf("[%lld/%lld] %s  %s%s%s\n", (long long)i + 1, (long long)n, p.report.all_right ? "right" : "WRONG",
                      p.prompt.c_str(), wrong.empty() ? "" : "  -- ", wrong.c_str());
          std::fflush(stdout);
          if (!videos.empty()) {
            char name[32];
            std::snprintf(name, sizeof name, "%03lld.y4m", (long long)i);
            ditkit::write_video(frames, (fs::path(videos) / name).string(), {});
          }
          return true;
        });

    nlohmann::json report = {{"model", model},
                             {"split", split},
                             {"count", o.count},
                             {"seed", o.seed},
                             {"steps", o.generation.sampling.steps},
                             {"guidance", o.generation.sampling.guidance},
                             {"attention", attention},
                             {"right", result.right},
                             {"adherence", result.share()},
                             {"prompts", nlohmann::json::array()}};
    for (const ditkit::PromptResult& p : result.prompts)
      report["prompts"].push_back(
          {{"prompt", p.prompt}, {"seed", p.seed}, {"all_right", p.report.all_right}, {"wrong", p.report.wrong}});
    ditkit::write_text_file(out, report.dump(2) + "\n");
    std::printf("adherence %lld/%lld = %.1f%% (%s prompts); report %s\n", (long long)result.right,
                (long long)result.prompts.size(), 100.0 * result.share(), split.c_str(), out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dit-adherence: %s\n", e.what());
    return 1;
  }
  return 0;
}
