// Prompt adherence of a shapes model, measured the way issue [tiny-model] defines it: generate a
// video for each of N prompts drawn from a split of the caption facts (by default the held-out
// combinations training never saw), look at the frames with the adherence checker, and count the
// prompts whose every stated fact is right. Generating needs no OpenCV, so the videos can be made
// where OpenCV is missing (the GPU machine) and judged elsewhere; measure_adherence, which also
// looks, is built only with OpenCV (the checker's eyes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipelines/adherence_checker.h"
#include "pipelines/shape_clips.h"
#include "pipelines/text_to_video.h"

namespace ditkit {

struct AdherenceOptions {
  int64_t count = 32;          // prompts
  uint64_t seed = 0;           // prompt i is sample_facts(seed + i, split), generated with noise seed seed + i
  Split split = Split::kHeldOut;
  TextToVideoOptions generation;  // size, steps, guidance, ...; prompt and seed are set per prompt
  // > 0: shape-contrastive guidance at this scale, against each prompt's caption with other
  // shapes (with_contrasting_shapes; SamplingOptions::contrast_guidance). 0: off.
  double shape_contrast = 0;
};

// One prompt of a run: the facts it states, its caption, and its noise seed.
struct AdherencePrompt {
  ClipFacts facts;
  std::string prompt;
  uint64_t seed = 0;
};

// Called after each video with its index, the count, its prompt and its frames (uint8
// [T, H, W, 3], not kept afterwards); return false to stop early.
using AdherenceVideoCallback = std::function<bool(int64_t, int64_t, const AdherencePrompt&, const at::Tensor&)>;

// Generates the run's videos without looking at them.
void generate_adherence_videos(TextToVideo& pipeline, const AdherenceOptions& options, RecipeAttention* attention,
                               const AdherenceVideoCallback& on_video);

struct PromptResult {
  std::string prompt;
  uint64_t seed = 0;
  CheckReport report;
};

struct AdherenceResult {
  std::vector<PromptResult> prompts;
  int64_t right = 0;
  FactCounts facts;                 // summed over the prompts
  FactCounts held_out_pair_facts;   // the same, for objects in a held-out pair only
  double share() const { return prompts.empty() ? 0.0 : double(right) / double(prompts.size()); }
  void add(PromptResult p) {
    right += p.report.all_right ? 1 : 0;
    facts += p.report.facts;
    held_out_pair_facts += p.report.held_out_pair_facts;
    prompts.push_back(std::move(p));
  }
};

// Called after each prompt with its index, the count, its result and its frames (uint8
// [T, H, W, 3], not kept afterwards); return false to stop early.
using AdherenceCallback = std::function<bool(int64_t, int64_t, const PromptResult&, const at::Tensor&)>;

// generate_adherence_videos, each video checked against its prompt's facts. Only with OpenCV.
AdherenceResult measure_adherence(TextToVideo& pipeline, const AdherenceOptions& options,
                                  RecipeAttention* attention = nullptr, const AdherenceCallback& on_prompt = {});

}  // namespace ditkit
