#include "pipelines/ab_compare.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "pipelines/charts.h"
#include "pipelines/png.h"
#include "pipelines/progress.h"
#include "pipelines/shape_clips.h"
#include "pipelines/video_writer.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"

namespace ditkit {

using nlohmann::json;

void AttentionErrorMeter::observe_output(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const Plan& plan, const AttentionOutput& output,
                                         const AttentionContext& ctx) {
  Plan dense_plan;
  dense_plan.dense = true;
  const at::Tensor reference = execute_plan(q, k, v, dense_plan).out.to(at::kDouble);
  const double error =
      (output.out.to(at::kDouble) - reference).norm().item<double>() / reference.norm().item<double>();
  const double density = plan.density(q.device()).item<double>();
  if (sums_.size() <= static_cast<size_t>(ctx.layer)) sums_.resize(ctx.layer + 1);
  std::vector<Sums>& steps = sums_[ctx.layer];
  if (steps.size() < static_cast<size_t>(ctx.num_steps)) steps.resize(ctx.num_steps);
  Sums& s = steps.at(ctx.step);
  s.error += error;
  s.density += density;
  ++s.calls;
}

std::vector<LayerComparison> AttentionErrorMeter::layers() const {
  std::vector<LayerComparison> layers;
  for (const std::vector<Sums>& steps : sums_) {
    LayerComparison l;
    int calls = 0;
    for (const Sums& s : steps) {
      l.step_error.push_back(s.calls ? s.error / s.calls : NAN);
      l.step_density.push_back(s.calls ? s.density / s.calls : NAN);
      l.relative_error += s.error;
      l.density += s.density;
      calls += s.calls;
    }
    if (calls) {
      l.relative_error /= calls;
      l.density /= calls;
    }
    layers.push_back(std::move(l));
  }
  return layers;
}

namespace {

// Why adherence is not checked for `prompt`, or "" when it can be.
std::string adherence_skip_reason(const AbOptions& options, const std::string& prompt) {
  if (!DITKIT_HAVE_OPENCV) return "not checked: this build has no OpenCV (the adherence checker's eyes)";
  if (!options.adherence) return "not checked: only the shipped model's captions and palette can be checked";
  try {
    parse_caption(prompt);
  } catch (const std::invalid_argument& e) {
    return std::string("not checked: the prompt is not a shipped-model caption (") + e.what() + ")";
  }
  return "";
}

}  // namespace

std::vector<PromptComparison> compare_recipe_to_dense(TextToVideo& pipeline, const AbOptions& options,
                                                      const AbLog& log) {
  if (options.prompts.empty()) throw std::invalid_argument("no prompt to compare");
  // compare_videos' SSIM window; checked here so that a small size fails before two runs, not after.
  const TextToVideoOptions& g = options.generation;
  if (g.width < 11 || g.height < 11)
    throw std::invalid_argument("video size " + std::to_string(g.width) + "x" + std::to_string(g.height) +
                                ": SSIM needs frames of at least 11x11");
  const int num_layers = static_cast<int>(pipeline.transformer().config().num_layers);
  const int steps = options.generation.sampling.steps;
  const Recipe recipe = load_recipe(options.recipe, attention_method_specs());
  check_recipe(recipe, num_layers, steps);
  RecipeAttention dense(load_recipe("dense", attention_method_specs()));
  RecipeAttention sparse(recipe);
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };

  std::vector<PromptComparison> results;
  for (size_t i = 0; i < options.prompts.size(); ++i) {
    PromptComparison r;
    r.prompt = options.prompts[i];
    TextToVideoOptions gen = options.generation;
    gen.prompt = r.prompt;
    const std::string which = "prompt " + std::to_string(i + 1) + "/" + std::to_string(options.prompts.size());
    // Each run gets a progress line (drawn only on a terminal) and a log line when it starts.
    auto run = [&](RecipeAttention& attention, const std::string& name) {
      say(which + ": " + name + " run");
      Progress progress(name, steps);
      at::Tensor frames = pipeline.generate(gen, &attention, [&](int, int) {
        progress.advance();
        return true;
      });
      progress.finish();
      return frames;
    };
    r.dense_frames = run(dense, "dense");
    r.dense_time = pipeline.timings();
    AttentionErrorMeter meter;
    sparse.set_observer(&meter);
    r.recipe_frames = run(sparse, "recipe");
    sparse.set_observer(nullptr);
    r.recipe_time = pipeline.timings();

    r.metrics = compare_videos(r.dense_frames, r.recipe_frames);
    r.layers = meter.layers();
    for (const LayerComparison& l : r.layers) {
      r.mean_error += l.relative_error / r.layers.size();
      r.mean_density += l.density / r.layers.size();
    }
    r.adherence.note = adherence_skip_reason(options, r.prompt);
#if DITKIT_HAVE_OPENCV
    if (r.adherence.note.empty()) {
      const ClipFacts facts = parse_caption(r.prompt);
      r.adherence.dense = check_clip(r.dense_frames, facts);
      r.adherence.recipe = check_clip(r.recipe_frames, facts);
      r.adherence.checked = true;
    }
#endif
    char line[200];
    std::snprintf(line, sizeof(line), "%s: PSNR %.2f dB, SSIM %.4f, attention error %.4g, density %.3f", which.c_str(),
                  r.metrics.mean_psnr, r.metrics.mean_ssim, r.mean_error, r.mean_density);
    say(line);
    results.push_back(std::move(r));
  }
  return results;
}

namespace {

// JSON has no infinity: identical frames' PSNR is written as null (report.json says so).
json number(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

json numbers(const std::vector<double>& xs) {
  json a = json::array();
  for (double x : xs) a.push_back(number(x));
  return a;
}

json timings_json(const TextToVideoTimings& t) { return {{"text", t.text}, {"denoise", t.denoise}, {"decode", t.decode}}; }

json adherence_json(const AdherenceComparison& a) {
  if (!a.checked) return {{"checked", false}, {"note", a.note}};
  auto one = [](const CheckReport& r) { return json{{"all_right", r.all_right}, {"wrong", r.wrong}, {"background", r.background}}; };
  return {{"checked", true}, {"dense", one(a.dense)}, {"recipe", one(a.recipe)}};
}

std::string two_digits(size_t i) {
  char s[24];
  std::snprintf(s, sizeof(s), "%02zu", i);
  return s;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fixed(double x, const char* format = "%.4g") {
  if (!std::isfinite(x)) return x > 0 ? "inf" : "-";
  char s[32];
  std::snprintf(s, sizeof(s), format, x);
  return s;
}

std::string adherence_text(const AdherenceComparison& a) {
  if (!a.checked) return a.note;
  auto one = [](const CheckReport& r) {
    if (r.all_right) return std::string("all right");
    std::string s = "wrong:";
    for (const std::string& w : r.wrong) s += " " + w + ";";
    return s;
  };
  return "dense " + one(a.dense) + " | recipe " + one(a.recipe);
}

}  // namespace

std::vector<std::string> write_ab_report(const std::string& dir, const AbRun& run,
                                         const std::vector<PromptComparison>& results) {
  std::vector<std::string> written;
  json report;
  report["model"] = run.model;
  report["recipe"] = run.recipe;
  report["device"] = run.device;
  report["seed"] = run.seed;
  report["steps"] = run.steps;
  report["guidance"] = run.guidance;
  report["shift"] = run.shift;
  report["frames"] = run.frames;
  report["height"] = run.height;
  report["width"] = run.width;
  report["notes"] = json::array({"psnr null: identical frames (infinite PSNR)",
                     "attention error: ||out_recipe - out_dense|| / ||out_dense|| on the recipe run's own q, k, v, "
                     "mean over calls; density: Plan::density, mean over calls",
                     "times in seconds"});
  std::ostringstream html;
  html << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>dit-ab: " << html_escape(run.recipe)
       << " vs dense</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
          "td:first-child,th:first-child{text-align:left}</style></head><body>\n"
       << "<h1>Recipe <code>" << html_escape(run.recipe) << "</code> against dense</h1>\n<p>Model "
       << html_escape(run.model) << " on " << html_escape(run.device) << "; " << run.width << "x" << run.height << ", "
       << run.frames << " frames, " << run.steps << " steps, guidance " << run.guidance << ", shift " << run.shift
       << ", seed " << run.seed << ".</p>\n";

  json prompts = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const PromptComparison& r = results[i];
    const std::string nn = two_digits(i);
    json p;
    p["prompt"] = r.prompt;
    p["psnr"] = numbers(r.metrics.psnr);
    p["ssim"] = numbers(r.metrics.ssim);
    p["mean_psnr"] = number(r.metrics.mean_psnr);
    p["mean_ssim"] = number(r.metrics.mean_ssim);
    json layers = json::array();
    std::vector<double> layer_errors;
    for (size_t l = 0; l < r.layers.size(); ++l) {
      const LayerComparison& c = r.layers[l];
      layers.push_back(json{{"layer", l},
                        {"relative_error", number(c.relative_error)},
                        {"density", number(c.density)},
                        {"step_error", numbers(c.step_error)},
                        {"step_density", numbers(c.step_density)}});
      layer_errors.push_back(c.relative_error);
    }
    p["layers"] = layers;
    p["mean_attention_error"] = number(r.mean_error);
    p["mean_density"] = number(r.mean_density);
    p["time"] = {{"dense", timings_json(r.dense_time)}, {"recipe", timings_json(r.recipe_time)}};
    p["adherence"] = adherence_json(r.adherence);

    const std::string video = "side_by_side_" + nn;
    const at::Tensor both = at::cat({r.dense_frames, r.recipe_frames}, 2);
    VideoOptions video_options;
    video_options.fps = run.fps;
    json videos = json::array();
    std::vector<std::string> extensions{".y4m"};
    if (DITKIT_HAVE_FFMPEG) extensions.push_back(".mp4");
    for (const std::string& ext : extensions) {
      write_video(both, dir + "/" + video + ext, video_options);
      written.push_back(video + ext);
      videos.push_back(video + ext);
    }
    p["videos"] = videos;
    const std::string psnr_png = "psnr_" + nn + ".png", error_png = "layer_error_" + nn + ".png";
    write_png(draw_line_chart(r.metrics.psnr, {"PSNR PER FRAME, RECIPE VS DENSE", "FRAME", "DB"}), dir + "/" + psnr_png);
    write_png(draw_bar_chart(layer_errors, {"ATTENTION ERROR PER LAYER (REL. L2)", "LAYER", ""}),
              dir + "/" + error_png);
    written.push_back(psnr_png);
    written.push_back(error_png);
    p["charts"] = json::array({psnr_png, error_png});
    prompts.push_back(p);

    html << "<h2>" << html_escape(r.prompt) << "</h2>\n<table>\n"
         << "<tr><th>mean PSNR (dB)</th><td>" << fixed(r.metrics.mean_psnr, "%.2f") << "</td></tr>\n"
         << "<tr><th>mean SSIM</th><td>" << fixed(r.metrics.mean_ssim) << "</td></tr>\n"
         << "<tr><th>attention error (mean over layers)</th><td>" << fixed(r.mean_error) << "</td></tr>\n"
         << "<tr><th>density run (mean over layers)</th><td>" << fixed(r.mean_density, "%.3f") << "</td></tr>\n"
         << "<tr><th>adherence</th><td>" << html_escape(adherence_text(r.adherence)) << "</td></tr>\n</table>\n"
         << "<p><img src=\"" << psnr_png << "\" alt=\"PSNR per frame\"> <img src=\"" << error_png
         << "\" alt=\"attention error per layer\"></p>\n<p>Side by side (dense | recipe):";
    for (const auto& v : videos) html << " <a href=\"" << v.get<std::string>() << "\">" << v.get<std::string>() << "</a>";
    html << "</p>\n<table><tr><th>time (s)</th><th>text</th><th>denoise</th><th>decode</th></tr>\n";
    for (const auto& [name, t] : {std::pair{"dense", r.dense_time}, std::pair{"recipe", r.recipe_time}})
      html << "<tr><td>" << name << "</td><td>" << fixed(t.text, "%.2f") << "</td><td>" << fixed(t.denoise, "%.2f")
           << "</td><td>" << fixed(t.decode, "%.2f") << "</td></tr>\n";
    html << "</table>\n<table><tr><th>layer</th><th>attention error</th><th>density</th></tr>\n";
    for (size_t l = 0; l < r.layers.size(); ++l)
      html << "<tr><td>" << l << "</td><td>" << fixed(r.layers[l].relative_error) << "</td><td>"
           << fixed(r.layers[l].density, "%.3f") << "</td></tr>\n";
    html << "</table>\n<table><tr><th>frame</th><th>PSNR (dB)</th><th>SSIM</th></tr>\n";
    for (size_t f = 0; f < r.metrics.psnr.size(); ++f)
      html << "<tr><td>" << f << "</td><td>" << fixed(r.metrics.psnr[f], "%.2f") << "</td><td>"
           << fixed(r.metrics.ssim[f]) << "</td></tr>\n";
    html << "</table>\n";
  }
  report["prompts"] = prompts;
  html << "<p>Every number: <a href=\"report.json\">report.json</a>.</p>\n</body></html>\n";
  write_text_file(dir + "/report.json", report.dump(2) + "\n");
  write_text_file(dir + "/report.html", html.str());
  written.push_back("report.json");
  written.push_back("report.html");
  return written;
}

}  // namespace ditkit
