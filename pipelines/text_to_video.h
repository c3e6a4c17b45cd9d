// Text to video with a Wan2.1 diffusers folder: tokenizer -> umT5 -> sampler (DiT + scheduler,
// guidance, attention recipe) -> VAE -> uint8 frames. What dit-gen and the library call.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dit/umt5_encoder.h"
#include "dit/wan_transformer.h"
#include "dit/wan_vae.h"
#include "pipelines/sampler.h"

namespace ditkit {

class Tokenizer;

struct TextToVideoOptions {
  std::string prompt;
  std::string negative_prompt;  // used with guidance > 1; "" is a prompt of its own (just EOS)
  int64_t width = 832, height = 480, frames = 81;
  int64_t max_sequence_length = 512;  // text tokens, as the Wan pipeline pads and truncates
  int64_t vae_chunk = 1;              // latent frames decoded at once: lower uses less memory
  SamplingOptions sampling;
};

// Wall time of each part of the last generate(), in seconds.
struct TextToVideoTimings {
  double text = 0, denoise = 0, decode = 0;
};

class TextToVideo {
 public:
  // dir: a Wan2.1 diffusers folder (tokenizer/, text_encoder/, transformer/, vae/). dtype is the
  // DiT's and the text encoder's (bf16 on the GPU, fp32 on the CPU); the VAE runs in it too.
  // On the GPU the text encoder waits on the CPU and visits the GPU only to encode.
  static TextToVideo load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // uint8 frames [T, H, W, 3] on the CPU. Sizes the model cannot take are errors that say which
  // it can (width and height multiples of 16, frames 1 + 4k).
  at::Tensor generate(const TextToVideoOptions& options, RecipeAttention* attention = nullptr,
                      const StepCallback& on_step = {});

  // The text contexts the DiT sees, one row per prompt: [N, max_sequence_length, d_model]. One
  // batch, so a GPU run moves the encoder there once for the prompt and the negative prompt.
  at::Tensor encode_texts(const std::vector<std::string>& prompts, int64_t max_sequence_length);

  const TextToVideoTimings& timings() const { return timings_; }
  const WanTransformer& transformer() const { return transformer_; }

 private:
  TextToVideo(std::shared_ptr<const Tokenizer> tokenizer, UMT5Encoder text_encoder, WanTransformer transformer,
              WanVae vae)
      : tokenizer_(std::move(tokenizer)),
        text_encoder_(std::move(text_encoder)),
        transformer_(std::move(transformer)),
        vae_(std::move(vae)) {}

  std::shared_ptr<const Tokenizer> tokenizer_;
  UMT5Encoder text_encoder_;
  WanTransformer transformer_;
  WanVae vae_;
  TextToVideoTimings timings_;
};

}  // namespace ditkit
