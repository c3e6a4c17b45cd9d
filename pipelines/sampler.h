// The denoising loop: noise -> latents, with classifier-free guidance (cond and uncond batched
// into one forward), a flow-matching scheduler, and the step context passed to the attention
// recipe so methods can differ per step and layer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dit/wan_transformer.h"
#include "sparse/recipe_attention.h"

namespace ditkit {

struct SamplingOptions {
  int steps = 50;
  double guidance = 5.0;         // 1 or less: no guidance, the uncond pass is skipped
  // Steps whose sigma is below guidance_boundary use guidance_below instead (Wan2.2's
  // guidance_scale_2 under boundary_ratio): the layout is set at high sigma, detail below it.
  // 0: one scale for every step.
  double guidance_boundary = 0;
  double guidance_below = 1.0;
  // Where guidance applies, the guided output's std (per sample) is pulled this far back toward
  // the conditional output's (Lin et al. 2024, diffusers' guidance_rescale), against the
  // over-saturation of high scales; on the model's output, x0 for a "sample" model. 0: off.
  double guidance_rescale = 0;
  // Contrastive guidance: with a contrast context (the prompt with one fact changed, such as the
  // shipped model's prompt with another shape), + contrast_guidance·(cond − contrast) on top of
  // the above, which amplifies only what tells the two prompts apart; a third pass batched with
  // cond and uncond. 0: off.
  double contrast_guidance = 0;
  double shift = 3.0;            // flow shift: 3.0 at 480p, 5.0 at 720p
  std::string scheduler = "unipc";  // or "euler"
  // Stochastic Euler (scheduler "euler" only): each step's noise estimate is mixed with fresh
  // noise, sqrt(1 − eta²)·ε̂ + eta·z, before the step to the next level, as DDIM's eta does; the
  // fresh noise is drawn from the seed too. 0: the deterministic step.
  double eta = 0;
  // What the model outputs: "velocity" (noise - x0, Wan's flow prediction) or "sample" (x0; the
  // loop turns it into the velocity (x_t - x0) / max(sigma, kMinSigmaForSample)). TextToVideo sets
  // it from the model folder.
  std::string prediction = "velocity";
  int64_t seed = 0;
};

// An x0-predicting model's velocity divides by sigma; training and sampling floor it here alike.
constexpr double kMinSigmaForSample = 0.05;

// Gaussian noise of `shape` from `seed`, drawn on the CPU and moved, so the CPU and the GPU
// start from the same noise.
at::Tensor seeded_noise(at::IntArrayRef shape, int64_t seed, at::Device device, at::ScalarType dtype);

// Called after every step with (step index, number of steps); return false to cancel, which
// makes sample() throw SamplingCancelled.
using StepCallback = std::function<bool(int step, int num_steps)>;

struct SamplingCancelled : std::runtime_error {
  SamplingCancelled() : std::runtime_error("sampling cancelled") {}
};

// latent_shape [B, C, F, H, W]; context / uncond_context / contrast_context [B, L, text_dim]
// (uncond is ignored without guidance, contrast without contrast_guidance). Returns the final
// latents [B, C, F, H, W] in fp32 (the VAE decides its dtype).
// With `parallel`, every rank calls it with the same arguments: each draws the same noise from
// the seed and runs the same scheduler on the whole latents, while the model's forward splits
// its tokens over the ranks and hands every rank the whole velocity; so all ranks hold the same
// latents after every step and return them.
at::Tensor sample(const WanTransformer& model, const std::vector<int64_t>& latent_shape, const at::Tensor& context,
                  const at::Tensor& uncond_context, const SamplingOptions& options, RecipeAttention* attention = nullptr,
                  const StepCallback& on_step = {}, const SequenceParallel* parallel = nullptr,
                  const at::Tensor& contrast_context = {});

}  // namespace ditkit
