// Text to video: prompt -> text encoder -> sampler (DiT + scheduler, guidance, attention recipe)
// -> decoder -> uint8 frames. What dit-gen and the library call. Two kinds of model folder load
// into the same path: a Wan2.1 diffusers folder (T5 tokenizer, umT5, Wan VAE) and ditkit's shipped
// model (caption encoder, space-to-depth codec; pipelines/shipped_model.h); only the text encoder
// and the decoder differ, behind the small interfaces declared in text_to_video.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dit/wan_transformer.h"
#include "pipelines/sampler.h"

namespace ditkit {

// What a model generates when not told otherwise. Wan2.1's are diffusers' WanPipeline defaults
// (flow shift from scheduler/scheduler_config.json where it says); the shipped model's are in its
// model_index.json.
struct ModelDefaults {
  int64_t width = 832, height = 480, frames = 81;
  int steps = 50;
  double guidance = 5.0, shift = 3.0;
  std::string negative_prompt;
  std::string scheduler = "unipc";
  int64_t max_sequence_length = 512;  // the text context's length
};

struct TextToVideoOptions {
  std::string prompt;
  std::string negative_prompt;  // used with guidance > 1; "" is a prompt of its own (Wan: just EOS)
  std::string contrast_prompt;  // used with sampling.contrast_guidance > 0 (SamplingOptions)
  int64_t width = 832, height = 480, frames = 81;
  // Text tokens, as the Wan pipeline pads and truncates; 0: the model's (Wan: 512). The shipped
  // model takes only its own (its caption encoder's max_length).
  int64_t max_sequence_length = 0;
  int64_t vae_chunk = 1;  // latent frames decoded at once: lower uses less memory
  SamplingOptions sampling;
};

// The GPU ran out of memory in generate(); the message names the part, the size, the
// allocator's numbers and what to lower.
struct OutOfGpuMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Wall time of each part of the last generate(), in seconds.
struct TextToVideoTimings {
  double text = 0, denoise = 0, decode = 0;
};

// A model folder may hold learned weights of attention methods (sla's projections after
// `dit-train --recipe`, by the keys AttentionMethod::weights uses) in this file; generate() hands
// them to the recipe it runs, whose methods take the keys they use.
constexpr const char* kAttentionWeightsFile = "attention_weights.safetensors";

class TextEncoder;   // prompts -> the DiT's text context
class FrameDecoder;  // latents -> uint8 frames

class TextToVideo {
 public:
  // dir: a Wan2.1 diffusers folder (tokenizer/, text_encoder/, transformer/, vae/), or the shipped
  // model's folder (its model_index.json's _class_name says which). dtype is the DiT's and the
  // text encoder's (bf16 on the GPU, fp32 on the CPU); the decoder runs in it too. On the GPU
  // umT5 waits on the CPU and visits the GPU only to encode.
  static TextToVideo load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // uint8 frames [T, H, W, 3] on the CPU. options.sampling.prediction is ignored: the model's own
  // is used. Sizes the model cannot take are errors that say which
  // it can (Wan: width and height multiples of 16, frames 1 + 4k; the shipped model: multiples
  // of 8 and frames multiples of 4).
  // With `parallel` (every rank calls it with the same options; the pipeline was loaded on the
  // rank's device), denoising splits the tokens over the ranks (sample()) and only rank 0
  // decodes: the other ranks return an undefined tensor.
  at::Tensor generate(const TextToVideoOptions& options, RecipeAttention* attention = nullptr,
                      const StepCallback& on_step = {}, const SequenceParallel* parallel = nullptr);

  // The text contexts the DiT sees, one row per prompt: [N, max_sequence_length, text_dim]
  // (max_sequence_length 0: the model's). One batch, so a GPU run moves umT5 there once for the
  // prompt and the negative prompt.
  at::Tensor encode_texts(const std::vector<std::string>& prompts, int64_t max_sequence_length);

  // The model's defaults, and options filled with them (prompt left empty).
  const ModelDefaults& defaults() const { return defaults_; }
  TextToVideoOptions default_options() const;

  const TextToVideoTimings& timings() const { return timings_; }
  const WanTransformer& transformer() const { return transformer_; }

 private:
  static TextToVideo load_model(const std::string& dir, at::Device device, at::ScalarType dtype);
  TextToVideo(std::shared_ptr<TextEncoder> text_encoder, WanTransformer transformer,
              std::shared_ptr<const FrameDecoder> decoder, ModelDefaults defaults, std::string prediction)
      : text_encoder_(std::move(text_encoder)),
        transformer_(std::move(transformer)),
        decoder_(std::move(decoder)),
        defaults_(std::move(defaults)),
        prediction_(std::move(prediction)) {}

  std::shared_ptr<TextEncoder> text_encoder_;
  WanTransformer transformer_;
  std::shared_ptr<const FrameDecoder> decoder_;
  ModelDefaults defaults_;
  std::string prediction_;  // SamplingOptions::prediction, a property of the model
  std::map<std::string, at::Tensor> attention_weights_;  // from kAttentionWeightsFile, on the CPU
  TextToVideoTimings timings_;
};

}  // namespace ditkit
