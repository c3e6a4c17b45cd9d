#include "pipelines/attention_profile.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "pipelines/heatmap.h"
#include "pipelines/png.h"

namespace ditkit {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<int> default_profile_steps(int num_steps) {
  return check_profile_steps({0, (num_steps - 1) / 2, num_steps - 1}, num_steps);
}

std::vector<int> check_profile_steps(std::vector<int> steps, int num_steps) {
  for (int s : steps) {
    if (s < 0) throw std::invalid_argument("step " + std::to_string(s) + " is not a step index (they count from 0)");
    if (s >= num_steps)
      throw std::invalid_argument("step " + std::to_string(s) + " is past the last step of a " +
                                  std::to_string(num_steps) + "-step run (steps 0.." + std::to_string(num_steps - 1) +
                                  ")");
  }
  std::sort(steps.begin(), steps.end());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  return steps;
}

const std::vector<std::string>& default_profile_candidates() {
  static const std::vector<std::string> kCandidates{"topk:k=4", "svg", "draft:density=0.1", "window3d"};
  return kCandidates;
}

std::vector<ProfileCandidate> parse_profile_candidates(const std::vector<std::string>& texts) {
  std::vector<ProfileCandidate> candidates;
  if (texts == std::vector<std::string>{"none"}) return candidates;
  for (const std::string& text : texts) {
    const auto not_one_rule = [&] {
      return RecipeError("recipe error: '" + text +
                         "' is not one method rule without conditions (give several candidates as separate "
                         "arguments, not joined by ',')");
    };
    // Checked before parsing, which would call two rules a recipe with two defaults.
    if (text.find(',') != std::string::npos) throw not_one_rule();
    const Recipe recipe = parse_recipe(text, attention_method_specs());
    if (!recipe.rules[0].is_default()) throw not_one_rule();
    candidates.push_back({text, recipe.rules[0]});
  }
  return candidates;
}

AttentionProfiler::AttentionProfiler(std::vector<int> steps, BlockShape blocks, std::vector<ProfileCandidate> candidates)
    : steps_(std::move(steps)),
      blocks_(blocks),
      candidates_(std::move(candidates)),
      candidate_seconds_(candidates_.size(), 0.0) {
  for (const ProfileCandidate& c : candidates_) {
    methods_.push_back(make_attention_method(c.rule));
    methods_.back()->reset();
  }
}

void AttentionProfiler::observe(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) {
  if (!std::binary_search(steps_.begin(), steps_.end(), ctx.step)) return;
  if (profiles_.empty() || profiles_.back().step != ctx.step) {
    StepProfile p;
    p.step = ctx.step;
    p.timestep = ctx.timestep;
    p.grid = ctx.grid;
    profiles_.push_back(std::move(p));
  }
  StepProfile& p = profiles_.back();
  TORCH_CHECK(ctx.layer == static_cast<int>(p.block_maps.size()), "AttentionProfiler: layer ", ctx.layer,
              " came after ", p.block_maps.size(), " layers of step ", ctx.step);

  const ExactAttentionMap map = exact_attention_map(q.narrow(0, 0, 1), k.narrow(0, 0, 1), ctx.grid, blocks_);
  const BlockGeometry geometry{ctx.grid.tokens(), blocks_.q_block, blocks_.k_block};
  std::vector<at::Tensor> density;
  for (double level : kProfileMassLevels) density.push_back(block_density(map.block_map, geometry, level)[0].cpu());
  const at::Tensor spatial = map.spatial_share[0].to(at::kCPU, at::kDouble);
  const at::Tensor temporal = map.temporal_share[0].to(at::kCPU, at::kDouble);
  p.block_maps.push_back(map.block_map[0].cpu());
  for (int64_t h = 0; h < q.size(2); ++h) {
    HeadProfile hp;
    hp.layer = ctx.layer;
    hp.head = static_cast<int>(h);
    for (size_t i = 0; i < density.size(); ++i) hp.density[i] = density[i][h].item<double>();
    hp.spatial_share = spatial[h].item<double>();
    hp.temporal_share = temporal[h].item<double>();
    hp.head_class = classify_head(hp.spatial_share, hp.temporal_share, ctx.grid);
    p.heads.push_back(hp);
  }
}

namespace {

// Per head, the share of key blocks a plan of batch 1 kept: float64 [H] on the CPU.
at::Tensor head_density(const Plan& plan, int64_t heads) {
  if (plan.dense) return at::ones({heads}, at::kDouble);
  const BlockCsr& csr = plan.csr;
  const at::Tensor offsets = csr.row_offsets.to(at::kCPU, at::kLong);
  const at::Tensor per_row = offsets.narrow(0, 1, csr.rows()) - offsets.narrow(0, 0, csr.rows());
  return per_row.view({csr.heads, csr.num_q_blocks}).to(at::kDouble).mean(1) / static_cast<double>(csr.num_k_blocks);
}

}  // namespace

void AttentionProfiler::observe_output(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const Plan& /*plan*/, const AttentionOutput& output,
                                       const AttentionContext& ctx) {
  if (methods_.empty() || !std::binary_search(steps_.begin(), steps_.end(), ctx.step)) return;
  StepProfile& p = profiles_.back();
  const int64_t H = q.size(2);
  const at::Tensor q0 = q.narrow(0, 0, 1), k0 = k.narrow(0, 0, 1), v0 = v.narrow(0, 0, 1);
  const at::Tensor reference = output.out.narrow(0, 0, 1).to(at::kDouble);
  const at::Tensor reference_norm = reference.pow(2).sum({0, 1, 3}).sqrt().cpu();
  for (size_t c = 0; c < methods_.size(); ++c) {
    const auto t0 = std::chrono::steady_clock::now();
    const Plan plan = methods_[c]->plan(q0, k0, ctx);
    const at::Tensor out = methods_[c]->run(q0, k0, v0, plan).out.to(at::kDouble);
    const at::Tensor error = ((out - reference).pow(2).sum({0, 1, 3}).sqrt().cpu() / reference_norm).contiguous();
    const at::Tensor density = head_density(plan, H).contiguous();
    candidate_seconds_[c] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t h = 0; h < H; ++h) {
      HeadProfile& hp = p.heads.at(static_cast<size_t>(ctx.layer * H + h));
      hp.candidates.push_back({error[h].item<double>(), density[h].item<double>()});
    }
  }
}

void prepare_profile_folder(const std::string& dir) {
  if (dir.empty()) throw std::runtime_error("the output folder name is empty");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw std::runtime_error("'" + dir + "' exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create folder '" + dir + "': " + ec.message());
  if (::access(dir.c_str(), W_OK) != 0) throw std::runtime_error("folder '" + dir + "' is not writable");
}

namespace {

// Six decimals are plenty for shares and densities and keep the files readable.
double rounded(double x) { return std::round(x * 1e6) / 1e6; }

std::string step_image_name(int step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%03d.png", step);
  return name;
}

std::string candidates_image_name(int step) {
  char name[40];
  std::snprintf(name, sizeof(name), "step_%03d_candidates.png", step);
  return name;
}

std::string percent(double level) { return std::to_string(static_cast<int>(std::lround(level * 100))); }

json profile_json(const ProfileRun& run, const AttentionProfiler& profiler) {
  const BlockShape blocks = profiler.blocks();
  json j;
  j["model"] = run.model;
  j["prompt"] = run.prompt;
  j["seed"] = run.seed;
  j["steps"] = run.steps;
  j["guidance"] = run.guidance;
  j["shift"] = run.shift;
  j["video"] = {{"frames", run.frames}, {"height", run.height}, {"width", run.width}};
  j["q_block"] = blocks.q_block;
  j["k_block"] = blocks.k_block;
  j["pass"] = "conditional";
  j["profiled_steps"] = profiler.steps();
  j["mass_levels"] = kProfileMassLevels;
  j["head_class_rule"] = {
      {"threshold", kHeadClassThreshold},
      {"spatial_mask", "keys within +-1 frame of the query's frame"},
      {"temporal_mask", "keys at the query's (row, column) in any frame"},
      {"rule", "a mask holds a head when the head's mean mass inside it is >= threshold and uniform attention's "
               "would be below it; the head takes the class of the smaller mask that holds it, 'other' when neither "
               "does"}};
  json candidates = json::array();
  for (const ProfileCandidate& c : profiler.candidates())
    candidates.push_back({{"name", c.name}, {"recipe", to_string(c.rule)}});
  j["candidates"] = candidates;
  j["candidate_error"] = "||out - out_dense|| / ||out_dense|| over the head's tokens and channels, on the dense run's q, k, v";
  j["candidate_density"] = "share of key blocks the candidate's plan kept for the head, averaged over query blocks";
  json steps = json::array();
  for (const StepProfile& p : profiler.profiles()) {
    json s;
    s["step"] = p.step;
    s["timestep"] = p.timestep;
    s["grid"] = {{"frames", p.grid.frames}, {"height", p.grid.height}, {"width", p.grid.width},
                 {"tokens", p.grid.tokens()}};
    s["spatial_mask_share"] = rounded(spatial_mask_share(p.grid));
    s["temporal_mask_share"] = rounded(temporal_mask_share(p.grid));
    s["image"] = step_image_name(p.step);
    s["block_maps"] = "block_maps.safetensors:step_" + std::to_string(p.step);
    if (!profiler.candidates().empty()) s["candidates_image"] = candidates_image_name(p.step);
    json heads = json::array();
    for (const HeadProfile& h : p.heads) {
      json d;
      for (size_t i = 0; i < kProfileMassLevels.size(); ++i) d[percent(kProfileMassLevels[i])] = rounded(h.density[i]);
      json c = json::object();
      for (size_t i = 0; i < h.candidates.size(); ++i)
        c[profiler.candidates()[i].name] = {{"error", rounded(h.candidates[i].error)},
                                            {"density", rounded(h.candidates[i].density)}};
      heads.push_back({{"layer", h.layer},
                       {"head", h.head},
                       {"class", to_string(h.head_class)},
                       {"spatial_share", rounded(h.spatial_share)},
                       {"temporal_share", rounded(h.temporal_share)},
                       {"density", d},
                       {"candidates", c}});
    }
    s["heads"] = heads;
    steps.push_back(s);
  }
  j["profiles"] = steps;
  return j;
}

// Candidates down, layers across: each cell the mean over the layer's heads.
void candidate_table(std::ostringstream& md, const std::vector<ProfileCandidate>& candidates, const StepProfile& p) {
  const size_t layers = p.block_maps.size();
  md << "\nCandidates against dense, on the same q, k, v: relative L2 error per layer (mean over heads), "
     << "and the mean over all heads of the error and of the share of key blocks kept.\n\n"
     << "![candidates' error, step " << p.step << "](" << candidates_image_name(p.step) << ")\n\n| candidate |";
  for (size_t l = 0; l < layers; ++l) md << " layer " << l << " |";
  md << " mean error | mean density |\n|---|";
  for (size_t l = 0; l < layers + 2; ++l) md << "---|";
  md << "\n";
  for (size_t c = 0; c < candidates.size(); ++c) {
    std::vector<double> layer_error(layers, 0.0), layer_heads(layers, 0.0);
    double error = 0, density = 0;
    for (const HeadProfile& h : p.heads) {
      layer_error[h.layer] += h.candidates[c].error;
      layer_heads[h.layer] += 1;
      error += h.candidates[c].error / p.heads.size();
      density += h.candidates[c].density / p.heads.size();
    }
    md << "| `" << candidates[c].name << "` |";
    for (size_t l = 0; l < layers; ++l) md << " " << layer_error[l] / layer_heads[l] << " |";
    md << " " << error << " | " << density << " |\n";
  }
}

// The candidates' errors of one step as heat-map tiles: a tile per candidate, layers down and
// heads across inside it.
at::Tensor candidates_image(const std::vector<ProfileCandidate>& candidates, const StepProfile& p) {
  const int64_t layers = static_cast<int64_t>(p.block_maps.size()), heads = p.block_maps.at(0).size(0);
  at::Tensor errors = at::zeros({static_cast<int64_t>(candidates.size()), 1, layers, heads}, at::kDouble);
  auto e = errors.accessor<double, 4>();
  for (const HeadProfile& h : p.heads)
    for (size_t c = 0; c < candidates.size(); ++c) e[c][0][h.layer][h.head] = h.candidates[c].error;
  std::ostringstream title;
  title << "step " << p.step << "  error of each candidate, a tile of " << layers << " layers down x " << heads
        << " heads across:";
  for (size_t c = 0; c < candidates.size(); ++c) title << "  C" << c << " " << candidates[c].name;
  return draw_heatmap_grid(errors, title.str(), "C", "", "colour: relative L2 error against dense (log)");
}

std::string summary_markdown(const ProfileRun& run, const AttentionProfiler& profiler) {
  const BlockShape blocks = profiler.blocks();
  std::ostringstream md;
  md.setf(std::ios::fixed);
  md.precision(3);
  md << "# Attention profile\n\n"
     << "- model: `" << run.model << "`\n- prompt: \"" << run.prompt << "\"\n- seed " << run.seed << ", " << run.steps
     << " steps, guidance " << run.guidance << ", shift " << run.shift << "; video " << run.frames << " frames "
     << run.height << "x" << run.width << "\n- blocks: " << blocks.q_block << " queries x " << blocks.k_block
     << " keys; the conditional pass\n\n"
     << "Head class: a mask holds a head when the head's mean attention mass inside it is at least "
     << kHeadClassThreshold << " and uniform attention's (the chance share) would be below that; the head takes "
     << "the class of the smaller mask that holds it, `other` when neither does. Spatial mask: keys within ±1 frame of the query's frame. Temporal mask: keys at the query's (row, "
     << "column) in any frame. density@P: the fewest key blocks per query block whose mass reaches P, as a share "
     << "of all key blocks, averaged over query blocks.\n";
  for (const StepProfile& p : profiler.profiles()) {
    std::map<HeadClass, int> count;
    for (const HeadProfile& h : p.heads) ++count[h.head_class];
    md << "\n## Step " << p.step << " (timestep " << p.timestep << ")\n\n"
       << "Grid " << p.grid.frames << "x" << p.grid.height << "x" << p.grid.width << " = " << p.grid.tokens()
       << " tokens; chance shares (uniform attention): spatial " << spatial_mask_share(p.grid) << ", temporal "
       << temporal_mask_share(p.grid) << ". Heads: " << count[HeadClass::kSpatial] << " spatial, "
       << count[HeadClass::kTemporal] << " temporal, " << count[HeadClass::kOther] << " other.\n\n"
       << "![block maps of step " << p.step << "](" << step_image_name(p.step) << ")\n\n"
       << "| layer | head | class | spatial share | temporal share |";
    for (double level : kProfileMassLevels) md << " density@" << percent(level) << " |";
    md << "\n|---|---|---|---|---|";
    for (size_t i = 0; i < kProfileMassLevels.size(); ++i) md << "---|";
    md << "\n";
    for (const HeadProfile& h : p.heads) {
      md << "| " << h.layer << " | " << h.head << " | " << to_string(h.head_class) << " | " << h.spatial_share << " | "
         << h.temporal_share << " |";
      for (double d : h.density) md << " " << d << " |";
      md << "\n";
    }
    if (!profiler.candidates().empty()) candidate_table(md, profiler.candidates(), p);
  }
  return md.str();
}

}  // namespace

void write_attention_profile(const std::string& dir, const ProfileRun& run, const AttentionProfiler& profiler) {
  prepare_profile_folder(dir);
  const BlockShape blocks = profiler.blocks();
  std::map<std::string, at::Tensor> maps;
  for (const StepProfile& p : profiler.profiles()) {
    const at::Tensor stacked = at::stack(p.block_maps);  // [L, H, NQ, NK]
    maps["step_" + std::to_string(p.step)] = stacked;
    std::ostringstream title;
    title << "step " << p.step << "  t=" << std::lround(p.timestep) << "  grid " << p.grid.frames << "x"
          << p.grid.height << "x" << p.grid.width << "  blocks " << blocks.q_block << "x" << blocks.k_block
          << "  layers down, heads across";
    write_png(draw_heatmap_grid(stacked, title.str(), "L", "H"), dir + "/" + step_image_name(p.step));
    if (!profiler.candidates().empty())
      write_png(candidates_image(profiler.candidates(), p), dir + "/" + candidates_image_name(p.step));
  }
  save_safetensors(dir + "/block_maps.safetensors", maps);
  write_text_file(dir + "/profile.json", profile_json(run, profiler).dump(2) + "\n");
  write_text_file(dir + "/summary.md", summary_markdown(run, profiler));
}

}  // namespace ditkit
