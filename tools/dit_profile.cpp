// dit-profile: the attention structure of a model, per layer and head.
// `dit-profile --prompt "..." --out DIR [--model DIR] [--steps-to-profile 0,15,29]
//              [--candidates topk:k=4 svg ...]`
//
// Runs the sampling loop for one prompt with dense attention and, at the chosen steps, measures
// every layer's self-attention from its exact softmax probabilities: block maps, density at
// 90/95/99% of the mass, spatial / temporal / other head class, and each candidate method's
// error against dense on the same q, k, v (pipelines/attention_profile.h lists the files
// written). Without --model it profiles the shipped default model.
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "pipelines/attention_profile.h"
#include "pipelines/progress.h"
#include "pipelines/text_to_video.h"
#include "tools/model_flags.h"

namespace {

struct ProfileOptions {
  std::string prompt;
  std::string out;
  ditkit::tools::ModelFlags run;
  std::vector<int> steps_to_profile;  // empty: first, middle and last
  std::vector<std::string> candidates = ditkit::default_profile_candidates();
  int k_block = 64;
};

int fail(const std::string& message, int code = 2) {
  std::fprintf(stderr, "dit-profile: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  ProfileOptions o;
  CLI::App app{"dit-profile: per layer and head, the attention structure of a video diffusion transformer"};
  app.option_defaults()->always_capture_default();
  app.add_option("-p,--prompt", o.prompt, "what the video shows")->required();
  app.add_option("-o,--out", o.out, "output folder: profile.json, summary.md, step_NNN.png, block_maps.safetensors")
      ->required();
  o.run.add_to(app);
  app.add_option("--steps-to-profile", o.steps_to_profile, "step indices to measure, from 0, e.g. 0,15,29")
      ->delimiter(',')
      ->default_str("first, middle and last");
  app.add_option("--candidates", o.candidates,
                 "sparse methods to measure against dense, each one recipe rule (e.g. paro:order=wfh:k=4); "
                 "several after one flag or the flag repeated; none: no candidates");
  app.add_option("--kblock", o.k_block, "key block size (query blocks are 128)")->check(CLI::IsMember({64, 128}));
  CLI11_PARSE(app, argc, argv);

  // Before any work: a run that cannot write its results, or cannot run a candidate, is not worth starting.
  std::vector<ditkit::ProfileCandidate> candidates;
  try {
    candidates = ditkit::parse_profile_candidates(o.candidates);
  } catch (const std::exception& e) {
    return fail("--candidates: " + std::string(e.what()));
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

  ditkit::TextToVideoOptions gen = pipeline->default_options();
  gen.prompt = o.prompt;
  o.run.apply(gen);
  std::vector<int> profile_steps;
  try {
    profile_steps = o.steps_to_profile.empty()
                        ? ditkit::default_profile_steps(gen.sampling.steps)
                        : ditkit::check_profile_steps(o.steps_to_profile, gen.sampling.steps);
  } catch (const std::exception& e) {
    return fail("--steps-to-profile: " + std::string(e.what()));
  }

  try {
    std::fprintf(stderr, "dit-profile: %s on %s, %lldx%lld, %lld frames, %d steps, guidance %g; profiling steps",
                 model.c_str(), device.str().c_str(), static_cast<long long>(gen.width),
                 static_cast<long long>(gen.height), static_cast<long long>(gen.frames), gen.sampling.steps,
                 gen.sampling.guidance);
    for (int s : profile_steps) std::fprintf(stderr, " %d", s);
    std::fprintf(stderr, "; candidates");
    for (const ditkit::ProfileCandidate& c : candidates) std::fprintf(stderr, " %s", c.name.c_str());
    std::fprintf(stderr, "\n");

    ditkit::RecipeAttention attention(ditkit::load_recipe("dense", ditkit::attention_method_specs()));
    ditkit::AttentionProfiler profiler(profile_steps, ditkit::BlockShape{128, o.k_block}, std::move(candidates));
    attention.set_observer(&profiler);
    // Steps after the last profiled one, and the decoder, add nothing: the run stops there.
    const int last = profile_steps.back();
    ditkit::Progress progress("profile", last + 1);
    auto t0 = std::chrono::steady_clock::now();
    ditkit::tools::generate_through_step(*pipeline, gen, attention, last, progress);
    progress.finish();
    const double run_s = ditkit::tools::seconds_since(t0);

    ditkit::ProfileRun run{model, o.prompt, o.run.seed, gen.sampling.steps, gen.sampling.guidance, gen.sampling.shift,
                           gen.frames, gen.height, gen.width};
    t0 = std::chrono::steady_clock::now();
    ditkit::write_attention_profile(o.out, run, profiler);
    const double write_s = ditkit::tools::seconds_since(t0);
    std::fprintf(stderr, "dit-profile: wrote %s/summary.md, profile.json, %zu heat maps\n", o.out.c_str(),
                 profiler.profiles().size() * (profiler.candidates().empty() ? 1 : 2));
    std::fprintf(stderr, "timings (s): load %.2f | text %.2f | %d steps with profiling %.2f | write %.2f\n", load_s,
                 pipeline->timings().text, last + 1, run_s, write_s);
    if (!profiler.candidates().empty()) {
      std::fprintf(stderr, "candidates (s, within the steps):");
      for (size_t c = 0; c < profiler.candidates().size(); ++c)
        std::fprintf(stderr, " %s %.2f%s", profiler.candidates()[c].name.c_str(), profiler.candidate_seconds()[c],
                     c + 1 < profiler.candidates().size() ? " |" : "\n");
    }
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  return 0;
}
