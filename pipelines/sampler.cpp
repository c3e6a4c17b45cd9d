#include "pipelines/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "pipelines/flow_scheduler.h"

namespace ditkit {

at::Tensor seeded_noise(at::IntArrayRef shape, int64_t seed, at::Device device, at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  return at::randn(shape, gen, at::dtype(at::kFloat)).to(device, dtype);
}

at::Tensor sample(const WanTransformer& model, const std::vector<int64_t>& latent_shape, const at::Tensor& context,
                  const at::Tensor& uncond_context, const SamplingOptions& options, RecipeAttention* attention,
                  const StepCallback& on_step, const SequenceParallel* parallel,
                  const at::Tensor& contrast_context) {
  TORCH_CHECK(latent_shape.size() == 5, "sample: latent shape must be [B, C, F, H, W], got ", latent_shape.size(),
              " dimensions");
  TORCH_CHECK(options.steps > 0, "sample: steps must be positive, got ", options.steps);
  const int64_t B = latent_shape[0];
  TORCH_CHECK(context.dim() == 3 && context.size(0) == B, "sample: context must be [", B, ", L, text_dim], got ",
              context.sizes());
  TORCH_CHECK(options.guidance_rescale >= 0 && options.guidance_rescale <= 1,
              "sample: guidance_rescale must be in [0, 1], got ", options.guidance_rescale);
  TORCH_CHECK(options.guidance_boundary >= 0 && options.guidance_boundary <= 1,
              "sample: guidance_boundary is a sigma in [0, 1], got ", options.guidance_boundary);
  const bool split_guidance = options.guidance_boundary > 0;
  const bool guided = options.guidance > 1.0 || (split_guidance && options.guidance_below > 1.0);
  if (guided)
    TORCH_CHECK(uncond_context.defined() && uncond_context.sizes() == context.sizes(),
                "sample: with guidance the uncond context must have the context's shape ", context.sizes(), ", got ",
                uncond_context.defined() ? uncond_context.sizes() : at::IntArrayRef{});
  TORCH_CHECK(options.eta >= 0 && options.eta <= 1, "sample: eta must be in [0, 1], got ", options.eta);
  TORCH_CHECK(options.eta == 0 || options.scheduler == "euler", "sample: eta > 0 needs the euler scheduler, got \"",
              options.scheduler, "\"");
  TORCH_CHECK(options.contrast_guidance >= 0, "sample: contrast_guidance must be >= 0, got ",
              options.contrast_guidance);
  const bool contrasted = options.contrast_guidance > 0;
  if (contrasted)
    TORCH_CHECK(contrast_context.defined() && contrast_context.sizes() == context.sizes(),
                "sample: with contrast_guidance the contrast context must have the context's shape ",
                context.sizes(), ", got ", contrast_context.defined() ? contrast_context.sizes() : at::IntArrayRef{});
  TORCH_CHECK(options.prediction == "velocity" || options.prediction == "sample",
              "sample: prediction must be \"velocity\" or \"sample\", got \"", options.prediction, "\"");
  if (attention) attention->begin_run(static_cast<int>(model.config().num_layers), options.steps);

  auto scheduler = make_flow_scheduler(options.scheduler, options.shift);
  scheduler->set_timesteps(options.steps);
  // The latents stay fp32 between steps (as diffusers keeps them); the model sees its own dtype.
  at::Tensor latents = seeded_noise(latent_shape, options.seed, model.device(), at::kFloat);
  // Stochastic Euler's fresh noise, one draw a step from its own stream of the seed.
  at::Generator step_noise = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(options.seed) + 1);
  // The passes, batched: cond, then uncond (with guidance), then contrast (with contrast guidance).
  std::vector<at::Tensor> contexts{context};
  if (guided) contexts.push_back(uncond_context);
  if (contrasted) contexts.push_back(contrast_context);
  const int64_t passes = static_cast<int64_t>(contexts.size());
  const at::Tensor model_ctx = at::cat(contexts).to(model.device(), model.dtype());
  for (int i = 0; i < options.steps; ++i) {
    const double t = scheduler->timesteps()[i];
    at::Tensor x = (passes > 1 ? latents.repeat({passes, 1, 1, 1, 1}) : latents).to(model.dtype());
    at::Tensor timestep = at::full({x.size(0)}, t, at::dtype(at::kFloat).device(model.device()));
    const auto outputs =
        model.forward(x, timestep, model_ctx, attention, i, options.steps, parallel).to(at::kFloat).chunk(passes);
    const at::Tensor& cond = outputs[0];
    at::Tensor velocity = cond;
    if (guided) {
      // Every pass runs at every step, so plans see one batch size throughout.
      const double g = split_guidance && scheduler->sigmas()[i] < options.guidance_boundary ? options.guidance_below
                                                                                           : options.guidance;
      const at::Tensor& uncond = outputs[1];
      if (g > 1.0) velocity = uncond + g * (cond - uncond);
      if (g > 1.0 && options.guidance_rescale > 0) {
        const std::vector<int64_t> per_sample{1, 2, 3, 4};
        const at::Tensor ratio = at::std(cond, per_sample, /*unbiased=*/true, /*keepdim=*/true) /
                                 at::std(velocity, per_sample, /*unbiased=*/true, /*keepdim=*/true);
        velocity = velocity * (options.guidance_rescale * ratio + (1.0 - options.guidance_rescale));
      }
    }
    if (contrasted) velocity = velocity + options.contrast_guidance * (cond - outputs[passes - 1]);
    // Without a rescale, linear in the output, so guiding the x0 predictions and then converting
    // is the same as converting each and guiding the velocities.
    if (options.prediction == "sample")
      velocity = (latents - velocity) / std::max(scheduler->sigmas()[i], kMinSigmaForSample);
    const at::Tensor before = latents;
    latents = scheduler->step(velocity, latents);
    if (options.eta > 0) {
      // Euler lands on (1 − σ')·x̂0 + σ'·ε̂, with ε̂ = x + (1 − σ)·v; swap its ε̂ for the mix.
      const double sigma = scheduler->sigmas()[i], next = scheduler->sigmas()[i + 1];
      const at::Tensor eps = before + (1.0 - sigma) * velocity;
      const at::Tensor fresh = at::randn(latent_shape, step_noise, at::dtype(at::kFloat)).to(latents.device());
      latents = latents + next * ((std::sqrt(1.0 - options.eta * options.eta) - 1.0) * eps + options.eta * fresh);
    }
    if (on_step && !on_step(i, options.steps)) throw SamplingCancelled();
  }
  return latents;
}

}  // namespace ditkit
