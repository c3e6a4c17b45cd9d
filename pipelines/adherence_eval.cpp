#include "pipelines/adherence_eval.h"

#include <stdexcept>

namespace ditkit {

AdherenceResult measure_adherence(TextToVideo& pipeline, const AdherenceOptions& o, RecipeAttention* attention,
                                  const AdherenceCallback& on_prompt) {
  if (o.count < 1) throw std::invalid_argument("adherence: the prompt count must be >= 1, got " + std::to_string(o.count));
  AdherenceResult result;
  for (int64_t i = 0; i < o.count; ++i) {
    PromptResult p;
    p.seed = o.seed + uint64_t(i);
    const ClipFacts facts = sample_facts(p.seed, o.split);
    p.prompt = caption(facts);
    TextToVideoOptions generation = o.generation;
    generation.prompt = p.prompt;
    generation.sampling.seed = int64_t(p.seed);
    const at::Tensor frames = pipeline.generate(generation, attention);
    p.report = check_clip(frames, facts);
    result.right += p.report.all_right ? 1 : 0;
    result.prompts.push_back(std::move(p));
    if (on_prompt && !on_prompt(i, o.count, result.prompts.back(), frames)) break;
  }
  return result;
}

}  // namespace ditkit
