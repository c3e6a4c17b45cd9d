#include "pipelines/adherence_eval.h"

#include <stdexcept>

#include "ditkit_config.h"

namespace ditkit {

void generate_adherence_videos(TextToVideo& pipeline, const AdherenceOptions& o, RecipeAttention* attention,
                               const AdherenceVideoCallback& on_video) {
  if (o.count < 1) throw std::invalid_argument("adherence: the prompt count must be >= 1, got " + std::to_string(o.count));
  for (int64_t i = 0; i < o.count; ++i) {
    AdherencePrompt p;
    p.seed = o.seed + uint64_t(i);
    p.facts = sample_facts(p.seed, o.split);
    p.prompt = caption(p.facts);
    TextToVideoOptions generation = o.generation;
    generation.prompt = p.prompt;
    generation.sampling.seed = int64_t(p.seed);
    if (o.shape_contrast > 0) {
      generation.contrast_prompt = caption(with_contrasting_shapes(p.facts));
      generation.sampling.contrast_guidance = o.shape_contrast;
    }
    if (!on_video(i, o.count, p, pipeline.generate(generation, attention))) break;
  }
}

#if DITKIT_HAVE_OPENCV
AdherenceResult measure_adherence(TextToVideo& pipeline, const AdherenceOptions& o, RecipeAttention* attention,
                                  const AdherenceCallback& on_prompt) {
  AdherenceResult result;
  generate_adherence_videos(pipeline, o, attention,
                            [&](int64_t i, int64_t n, const AdherencePrompt& p, const at::Tensor& frames) {
                              result.add({p.prompt, p.seed, check_clip(frames, p.facts)});
                              return !on_prompt || on_prompt(i, n, result.prompts.back(), frames);
                            });
  return result;
}
#endif

}  // namespace ditkit
