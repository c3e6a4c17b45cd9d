// dit-adherence: how often a shapes model draws what its prompt says. Generates one video per
// prompt drawn from the held-out caption facts (or the training split), checks each with the
// OpenCV adherence checker, prints one line per prompt and the share right, and writes a JSON
// report. Generating and judging can run on two machines: --videos DIR keeps the videos and a
// manifest of their prompts, and --judge DIR judges them later, loading no model. A build without
// OpenCV (the GPU machine's) only generates.
//   dit-adherence --count 32 --out adherence.json [--model DIR] [--attention RECIPE] [--videos DIR]
//   dit-adherence --judge DIR --out adherence.json
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dit/atomic_file.h"
#include "dit/config_json.h"
#include "ditkit_config.h"
#include "pipelines/adherence_eval.h"
#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/video_writer.h"
#include "pipelines/y4m.h"
#include "sparse/attention_method.h"
#include "tools/model_flags.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Beside the videos: the run's settings and, under "videos", each one's file, prompt and noise seed.
constexpr const char* kManifest = "prompts.json";

#if DITKIT_HAVE_OPENCV
void print_verdict(int64_t i, int64_t n, const ditkit::PromptResult& p) {
  std::string wrong;
  for (const std::string& w : p.report.wrong) wrong += (wrong.empty() ? "" : "; ") + w;
  std::printf("[%lld/%lld] %s  %s%s%s\n", (long long)i + 1, (long long)n, p.report.all_right ? "right" : "WRONG",
              p.prompt.c_str(), wrong.empty() ? "" : "  -- ", wrong.c_str());
  std::fflush(stdout);
}

// A run and a --judge of its videos write the same report: the run's settings, then the verdicts.
void write_report(json run, const ditkit::AdherenceResult& result, const std::string& out) {
  run["right"] = result.right;
  run["adherence"] = result.share();
  run["prompts"] = json::array();
  for (const ditkit::PromptResult& p : result.prompts) {
    // What the checker measured, so a verdict can be read against its numbers (a square judged a
    // circle by its fill, a direction by its travel) without judging the videos again.
    json seen = json::array();
    for (const ditkit::ObjectReport& o : p.report.seen)
      seen.push_back({{"colour", o.colour},
                      {"stated", o.stated},
                      {"shape", ditkit::seen_word(o.shape)},
                      {"fill", o.fill},
                      {"direction", ditkit::seen_word(o.direction)},
                      {"speed", ditkit::seen_word(o.speed)},
                      {"travel_x", o.travel_x},
                      {"travel_y", o.travel_y},
                      {"frames_found", o.frames_found}});
    run["prompts"].push_back({{"prompt", p.prompt},
                              {"seed", p.seed},
                              {"all_right", p.report.all_right},
                              {"wrong", p.report.wrong},
                              {"seen", seen}});
  }
  auto object_counts = [](const ditkit::FactCounts& f) {
    return json{{"objects", f.objects},             {"found", f.found},
                {"shapes_right", f.shapes_right},   {"directions_right", f.directions_right},
                {"speeds_judged", f.speeds_judged}, {"speeds_right", f.speeds_right}};
  };
  const ditkit::FactCounts& f = result.facts;
  run["facts"] = object_counts(f);
  run["facts"].update({{"backgrounds", f.backgrounds}, {"backgrounds_right", f.backgrounds_right}});
  run["facts_in_held_out_pairs"] = object_counts(result.held_out_pair_facts);
  ditkit::write_text_file(out, run.dump(2) + "\n");
  // Which facts go wrong: a model can be far from adherent in one way only.
  std::printf("facts seen as stated: background %lld/%lld, objects found %lld/%lld; of those found: shape %lld, "
              "direction %lld; speed %lld of %lld moving the right way\n",
              (long long)f.backgrounds_right, (long long)f.backgrounds, (long long)f.found, (long long)f.objects,
              (long long)f.shapes_right, (long long)f.directions_right, (long long)f.speeds_right,
              (long long)f.speeds_judged);
  // Facts it knows but cannot combine show here: objects whose colour and shape, or shape and
  // direction, training never showed together.
  const ditkit::FactCounts& h = result.held_out_pair_facts;
  if (h.objects > 0)
    std::printf("objects in a held-out pair: found %lld/%lld; of those found: shape %lld, direction %lld\n",
                (long long)h.found, (long long)h.objects, (long long)h.shapes_right, (long long)h.directions_right);
  std::printf("adherence %lld/%lld = %.1f%% (%s prompts); report %s\n", (long long)result.right,
              (long long)result.prompts.size(), 100.0 * result.share(), run["split"].get<std::string>().c_str(),
              out.c_str());
}

// --judge DIR: every video its manifest lists, read back and checked against the facts its prompt
// states (parse_caption, the inverse of the caption it was generated from). `run` gets the
// manifest's settings. All entries are checked before any video is judged.
ditkit::AdherenceResult judge_videos(const std::string& dir, json& run) {
  namespace cfg = ditkit::cfg;
  if (!fs::is_directory(dir)) throw std::invalid_argument("--judge: '" + dir + "' is not a folder");
  const std::string manifest = (fs::path(dir) / kManifest).string();
  if (!fs::exists(manifest))
    throw std::invalid_argument("--judge: '" + manifest + "' is missing (dit-adherence --videos DIR writes it)");
  run = cfg::read_config_json(manifest);
  const json* split = cfg::field(run, "split");
  if (!split || !split->is_string()) cfg::fail(manifest, "split", "must be a string");
  const json* listed = cfg::field(run, "videos");
  if (!listed || !listed->is_array() || listed->empty())
    cfg::fail(manifest, "videos", "must be a non-empty list of {\"file\", \"prompt\", \"seed\"}");
  struct Video {
    std::string path;
    ditkit::PromptResult result;
    ditkit::ClipFacts facts;
  };
  std::vector<Video> videos;
  for (size_t i = 0; i < listed->size(); ++i) {
    const json& v = (*listed)[i];
    const std::string where = "videos[" + std::to_string(i) + "]";
    auto string = [&](const char* name) {
      const json* value = v.is_object() ? cfg::field(v, name) : nullptr;
      if (!value || !value->is_string()) cfg::fail(manifest, where + "." + name, "must be a string");
      return value->get<std::string>();
    };
    Video video;
    video.path = (fs::path(dir) / string("file")).string();
    video.result.prompt = string("prompt");
    const json* seed = cfg::field(v, "seed");
    if (!seed || !seed->is_number_unsigned()) cfg::fail(manifest, where + ".seed", "must be an integer >= 0");
    video.result.seed = seed->get<uint64_t>();
    try {
      video.facts = ditkit::parse_caption(video.result.prompt);
    } catch (const std::invalid_argument& e) {
      cfg::fail(manifest, where + ".prompt", std::string("is not a caption: ") + e.what());
    }
    if (!fs::is_regular_file(video.path))
      throw std::invalid_argument("--judge: '" + video.path + "' (" + where + " of " + manifest + ") is missing");
    videos.push_back(std::move(video));
  }
  run.erase("videos");
  std::fprintf(stderr, "dit-adherence: judging %zu video%s in %s, generated with %s\n", videos.size(),
               videos.size() == 1 ? "" : "s", dir.c_str(), run.dump().c_str());

  ditkit::AdherenceResult result;
  for (size_t i = 0; i < videos.size(); ++i) {
    videos[i].result.report = ditkit::check_clip(ditkit::read_y4m(videos[i].path), videos[i].facts);
    result.add(std::move(videos[i].result));
    print_verdict(int64_t(i), int64_t(videos.size()), result.prompts.back());
  }
  return result;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::string model, attention = "dense", device_name = "auto", split = "held-out", out = "adherence.json", videos,
                     judge;
  ditkit::AdherenceOptions o;
  int steps = 0;
  double guidance = -1, shift = 0, eta = 0;
  std::string scheduler;
  ditkit::tools::GuidanceFlags guidance_steps;
  CLI::App app{"dit-adherence: prompt adherence of a shapes model, checked by looking at the frames"};
  app.footer(std::string("Generating on a machine without OpenCV, judging on another:\n") +
             "  dit-adherence --count 32 --videos DIR      writes DIR/NNN.y4m and DIR/" + kManifest + "\n" +
             "  dit-adherence --judge DIR --out adherence.json\n" +
             (DITKIT_HAVE_OPENCV ? "This build has OpenCV: it generates and judges."
                                 : "This build has no OpenCV: it only generates, into --videos DIR."));
  app.option_defaults()->always_capture_default();
  std::vector<CLI::Option*> generating = {
      app.add_option("-m,--model", model, "shapes model folder; default: the shipped model")->envname("DITKIT_MODEL"),
      app.add_option("--count", o.count, "prompts to generate and check")->check(CLI::PositiveNumber),
      app.add_option("--seed", o.seed, "prompt i is drawn from seed + i and generated with noise seed seed + i"),
      app.add_option("--split", split, "caption facts: held-out (combinations training never saw) or train")
          ->check(CLI::IsMember({"held-out", "train"})),
      app.add_option("-a,--attention", attention, "attention recipe"),
      app.add_option("--steps", steps, "denoising steps (0: the model's)")->check(CLI::NonNegativeNumber),
      app.add_option("--guidance", guidance, "guidance scale (negative: the model's)"),
      app.add_option("--shift", shift, "flow shift of the sampler (0: the model's)")->check(CLI::NonNegativeNumber),
      app.add_option("--scheduler", scheduler, "unipc or euler (empty: the model's)")
          ->check(CLI::IsMember({"", "unipc", "euler"})),
      app.add_option("--eta", eta, "stochastic Euler: share of fresh noise in each step's noise estimate, 0 to 1 "
                                   "(needs --scheduler euler; 0: deterministic). Measured on the shipped model: no "
                                   "gain at 0.5 or 1 (docs/shipped_model.md)")
          ->check(CLI::Range(0.0, 1.0)),
      app.add_option("--shape-contrast", o.shape_contrast,
                     "shape-contrastive guidance scale: also push each video away from its caption with other "
                     "shapes (a third pass a step; 0: off). Measured on the shipped model: no gain at 1, fewer "
                     "shapes right at 3 and 8 (docs/shipped_model.md)")
          ->check(CLI::NonNegativeNumber),
      app.add_option("--device", device_name, "auto, cpu or cuda[:N]")->envname("DITKIT_DEVICE"),
      app.add_option("--videos", videos,
                     "also write each video as DIR/NNN.y4m, listed with its prompt in DIR/" + std::string(kManifest) +
                         " for --judge (the folder must exist); required in a build without OpenCV")
          ->type_name("DIR")};
  for (CLI::Option* option : guidance_steps.add_to(app)) generating.push_back(option);
  CLI::Option* judge_option = app.add_option(
      "--judge", judge, "judge the videos a run wrote with --videos DIR instead of generating; needs OpenCV")
      ->type_name("DIR");
  CLI::Option* out_option = app.add_option("-o,--out", out, "JSON report; needs OpenCV");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!DITKIT_HAVE_OPENCV)
      for (CLI::Option* option : {judge_option, out_option})
        if (option->count())
          throw std::invalid_argument(option->get_name() +
                                      ": this dit-adherence is built without OpenCV, which judging needs");
    if (judge_option->count()) {
      // A generation flag beside --judge would be silently ignored. Values from DITKIT_MODEL or
      // DITKIT_DEVICE look the same as typed ones, so those pass.
      for (CLI::Option* option : generating)
        if (option->count() && (option->get_envname().empty() || !std::getenv(option->get_envname().c_str())))
          throw std::invalid_argument("--judge: " + option->get_name() +
                                      " is for generating; the videos were generated already, with the settings in " +
                                      (fs::path(judge) / kManifest).string());
#if DITKIT_HAVE_OPENCV
      json run;
      const ditkit::AdherenceResult result = judge_videos(judge, run);
      write_report(run, result, out);
#endif
      return 0;
    }
    if (!DITKIT_HAVE_OPENCV && videos.empty())
      throw std::invalid_argument("--videos DIR is required: built without OpenCV, dit-adherence only generates "
                                  "(DIR/NNN.y4m and DIR/" + std::string(kManifest) +
                                  "), for `dit-adherence --judge DIR` on a machine with OpenCV");
    if (!videos.empty() && !fs::is_directory(videos))
      throw std::invalid_argument("--videos '" + videos + "' is not an existing folder");
    if (model.empty()) model = ditkit::find_default_model_folder();
    const at::Device device = ditkit::device_from_flag(device_name);
    ditkit::TextToVideo pipeline = ditkit::TextToVideo::load(model, device, ditkit::run_dtype(device));
    o.split = split == "train" ? ditkit::Split::kTrain : ditkit::Split::kHeldOut;
    o.generation = pipeline.default_options();
    if (steps > 0) o.generation.sampling.steps = steps;
    if (guidance >= 0) o.generation.sampling.guidance = guidance;
    if (shift > 0) o.generation.sampling.shift = shift;
    if (!scheduler.empty()) o.generation.sampling.scheduler = scheduler;
    o.generation.sampling.eta = eta;
    if (eta > 0 && o.generation.sampling.scheduler != "euler")
      throw std::invalid_argument("--eta: stochastic steps are Euler's; add --scheduler euler (the model's is " +
                                  o.generation.sampling.scheduler + ")");
    guidance_steps.apply(o.generation.sampling);
    ditkit::Recipe recipe = ditkit::load_recipe(attention, ditkit::attention_method_specs());
    ditkit::check_recipe(recipe, int(pipeline.transformer().config().num_layers), o.generation.sampling.steps);
    ditkit::RecipeAttention recipe_attention(recipe);
    char eta_part[32] = "", contrast_part[48] = "";  // only when set
    if (eta > 0) std::snprintf(eta_part, sizeof eta_part, " (eta %g)", eta);
    if (o.shape_contrast > 0) std::snprintf(contrast_part, sizeof contrast_part, ", shape contrast %g", o.shape_contrast);
    std::fprintf(stderr, "dit-adherence: %s on %s, %lld %s prompts, %d %s steps%s, guidance %g%s, shift %g%s, attention '%s'\n",
                 model.c_str(), device.str().c_str(), (long long)o.count, split.c_str(), o.generation.sampling.steps,
                 o.generation.sampling.scheduler.c_str(), eta_part, o.generation.sampling.guidance,
                 guidance_steps.describe().c_str(), o.generation.sampling.shift, contrast_part, attention.c_str());

    const json run = {{"model", model},
                      {"device", device.str()},
                      {"split", split},
                      {"count", o.count},
                      {"seed", o.seed},
                      {"steps", o.generation.sampling.steps},
                      {"guidance", o.generation.sampling.guidance},
                      {"guidance_boundary", guidance_steps.boundary},
                      {"guidance_below", guidance_steps.below},
                      {"guidance_rescale", guidance_steps.rescale},
                      {"shape_contrast", o.shape_contrast},
                      {"scheduler", o.generation.sampling.scheduler},
                      {"eta", eta},
                      {"shift", o.generation.sampling.shift},
                      {"attention", attention}};
    json listed = json::array();
    // Writes video i as DIR/NNN.y4m and lists it; returns its path.
    auto keep = [&](int64_t i, const std::string& prompt, uint64_t seed, const at::Tensor& frames) {
      char name[32];
      std::snprintf(name, sizeof name, "%03lld.y4m", (long long)i);
      const std::string path = (fs::path(videos) / name).string();
      ditkit::write_video(frames, path, {});
      listed.push_back({{"file", name}, {"prompt", prompt}, {"seed", seed}});
      return path;
    };
    // The manifest is written after the last video, so it lists only videos that are there. An
    // earlier run's goes first: it would no longer describe the videos once they are overwritten.
    if (!videos.empty()) ditkit::remove_tree((fs::path(videos) / kManifest).string());
    auto write_manifest = [&] {
      json manifest = run;
      manifest["videos"] = listed;
      ditkit::write_text_file((fs::path(videos) / kManifest).string(), manifest.dump(2) + "\n");
    };
#if DITKIT_HAVE_OPENCV
    const ditkit::AdherenceResult result = ditkit::measure_adherence(
        pipeline, o, &recipe_attention, [&](int64_t i, int64_t n, const ditkit::PromptResult& p, const at::Tensor& frames) {
          print_verdict(i, n, p);
          if (!videos.empty()) keep(i, p.prompt, p.seed, frames);
          return true;
        });
    if (!videos.empty()) write_manifest();
    write_report(run, result, out);
#else
    ditkit::generate_adherence_videos(
        pipeline, o, &recipe_attention,
        [&](int64_t i, int64_t n, const ditkit::AdherencePrompt& p, const at::Tensor& frames) {
          std::printf("[%lld/%lld] %s  %s\n", (long long)i + 1, (long long)n, keep(i, p.prompt, p.seed, frames).c_str(),
                      p.prompt.c_str());
          std::fflush(stdout);
          return true;
        });
    write_manifest();
    std::printf("%lld videos and their prompts (%s) written to %s, not judged: built without OpenCV: judge them "
                "with `dit-adherence --judge %s` on a machine with OpenCV\n",
                (long long)listed.size(), kManifest, videos.c_str(), videos.c_str());
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dit-adherence: %s\n", e.what());
    return 1;
  }
  return 0;
}
