#include "pipelines/text_to_video.h"

#include <ATen/ATen.h>

#include <c10/util/Exception.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "dit/caption_encoder.h"
#include "dit/config_json.h"
#include "dit/safetensors.h"
#include "dit/umt5_encoder.h"
#include "dit/video_codec.h"
#include "dit/wan_vae.h"
#include "ditkit_config.h"
#include "pipelines/shipped_model.h"
#if DITKIT_HAVE_SENTENCEPIECE
#include "dit/tokenizer.h"
#endif

namespace ditkit {

// The two parts that differ between kinds of model folder. Both hand the DiT and the sampler
// what they take, so generate() is one path for every model.
class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // [N, max_sequence_length, text_dim] on `device` in `dtype`; max_sequence_length >= 1.
  virtual at::Tensor encode(const std::vector<std::string>& prompts, int64_t max_sequence_length, at::Device device,
                            at::ScalarType dtype) = 0;
};

class FrameDecoder {
 public:
  virtual ~FrameDecoder() = default;
  // The latent shape [1, C, F, H, W] of a video of this size, or std::invalid_argument saying
  // which sizes the model takes.
  virtual std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const = 0;
  // One video's latents -> uint8 frames [T, H, W, 3] on the CPU.
  virtual at::Tensor decode(const at::Tensor& latents, int64_t chunk) const = 0;
};

namespace {

std::string sub(const std::string& dir, const char* name) { return (std::filesystem::path(dir) / name).string(); }

// Waits for the device so that wall times measure the work, not the launches.
double seconds_since(std::chrono::steady_clock::time_point t0, at::Device device) {
  if (device.is_cuda()) at::empty({1}, at::TensorOptions().device(device)).cpu();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// A Wan2.1 diffusers folder: T5 tokenizer + umT5, Wan VAE.

// Only where the T5 tokenizer is built: the GPU machine has no sentencepiece.
#if DITKIT_HAVE_SENTENCEPIECE
class Umt5TextEncoder : public TextEncoder {
 public:
  Umt5TextEncoder(const std::string& dir, at::ScalarType dtype)
      : tokenizer_(sub(dir, "tokenizer")), encoder_(UMT5Encoder::load(sub(dir, "text_encoder"), at::kCPU, dtype)) {}

  at::Tensor encode(const std::vector<std::string>& prompts, int64_t max_sequence_length, at::Device device,
                    at::ScalarType dtype) override {
    TokenBatch tokens = tokenizer_.encode(prompts, max_sequence_length);
    // The encoder lives on the CPU between prompts; on the GPU it visits only to encode.
    UMT5Encoder encoder = device.is_cuda() ? encoder_.to(device) : encoder_;
    return encoder.encode_prompts(tokens.input_ids, tokens.attention_mask).to(device, dtype);
  }

  int64_t dim() const { return encoder_.config().d_model; }

 private:
  Tokenizer tokenizer_;
  UMT5Encoder encoder_;
};

class WanVaeDecoder : public FrameDecoder {
 public:
  WanVaeDecoder(WanVae vae, std::array<int64_t, 3> patch) : vae_(std::move(vae)), patch_(patch) {}

  std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override {
    const int64_t s = vae_.config().spatial_factor() * patch_[1];  // the VAE's factor times the DiT's patches
    if (width <= 0 || height <= 0 || width % s || height % s)
      throw std::invalid_argument("video size " + std::to_string(width) + "x" + std::to_string(height) +
                                  ": width and height must be positive multiples of " + std::to_string(s));
    const int64_t t = vae_.config().temporal_factor();
    if (frames < 1 || (frames - 1) % t)
      throw std::invalid_argument("frames " + std::to_string(frames) + ": the VAE makes 1 + " + std::to_string(t) +
                                  "k frames (e.g. 1, 5, ..., 81)");
    const int64_t f = vae_.config().spatial_factor();
    return {1, vae_.config().z_dim, (frames - 1) / t + 1, height / f, width / f};
  }

  at::Tensor decode(const at::Tensor& latents, int64_t chunk) const override { return vae_.decode(latents, chunk); }

 private:
  WanVae vae_;
  std::array<int64_t, 3> patch_;
};

// diffusers' WanPipeline defaults, with the flow shift of the folder's scheduler config.
ModelDefaults wan_defaults(const std::string& dir) {
  ModelDefaults d;
  const std::string scheduler = sub(dir, "scheduler/scheduler_config.json");
  if (std::filesystem::is_regular_file(scheduler))
    cfg::read_double(cfg::read_config_json(scheduler), "flow_shift", d.shift, scheduler);
  return d;
}
#endif  // DITKIT_HAVE_SENTENCEPIECE

// ---------------------------------------------------------------------------------------------
// The shipped model: caption encoder, space-to-depth codec.

class CaptionTextEncoder : public TextEncoder {
 public:
  explicit CaptionTextEncoder(CaptionEncoder encoder) : encoder_(std::move(encoder)) {}

  at::Tensor encode(const std::vector<std::string>& prompts, int64_t max_sequence_length, at::Device device,
                    at::ScalarType dtype) override {
    if (max_sequence_length != encoder_.config().max_length)
      throw std::invalid_argument("max_sequence_length " + std::to_string(max_sequence_length) +
                                  ": this model's text context is " + std::to_string(encoder_.config().max_length) +
                                  " tokens, as it was trained (pass 0 for the model's)");
    return encoder_.encode(encoder_.tokenize(prompts).ids).to(device, dtype);
  }

 private:
  CaptionEncoder encoder_;
};

class CodecDecoder : public FrameDecoder {
 public:
  CodecDecoder(VideoCodec codec, WanConfig transformer) : codec_(codec), transformer_(std::move(transformer)) {}

  std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const override {
    check_shipped_sizes(codec_.config(), transformer_, frames, height, width);
    return codec_.latent_shape(frames, height, width);
  }

  at::Tensor decode(const at::Tensor& latents, int64_t) const override { return codec_.decode(latents); }

 private:
  VideoCodec codec_;
  WanConfig transformer_;
};

}  // namespace

TextToVideo TextToVideo::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  TextToVideo model = load_model(dir, device, dtype);
  const std::filesystem::path weights = std::filesystem::path(dir) / kAttentionWeightsFile;
  if (std::filesystem::exists(weights)) {
    SafetensorsFile file(weights.string());
    for (const std::string& key : file.keys()) model.attention_weights_[key] = file.get(key).clone();
  }
  return model;
}

TextToVideo TextToVideo::load_model(const std::string& dir, at::Device device, at::ScalarType dtype) {
  if (!std::filesystem::is_directory(dir)) throw std::runtime_error("model folder '" + dir + "' does not exist");

  if (is_shipped_model_folder(dir)) {
    ShippedModelIndex index = read_shipped_model_index(dir);
    CaptionEncoder captions = CaptionEncoder::load(sub(dir, "caption_encoder"), device, dtype);
    WanTransformer transformer = WanTransformer::load(sub(dir, "transformer"), device, dtype);
    const WanConfig& c = transformer.config();
    if (captions.config().dim != c.text_dim)
      throw std::runtime_error(dir + ": the caption encoder's dim " + std::to_string(captions.config().dim) +
                               " differs from the transformer's text_dim " + std::to_string(c.text_dim));
    const int64_t channels = index.codec.latent_channels();
    if (c.in_channels != channels || c.out_channels != channels)
      throw std::runtime_error(dir + ": the codec makes " + std::to_string(channels) +
                               " latent channels; the transformer has in_channels " + std::to_string(c.in_channels) +
                               " and out_channels " + std::to_string(c.out_channels));
    try {
      check_shipped_sizes(index.codec, c, index.defaults.frames, index.defaults.height, index.defaults.width);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(sub(dir, "model_index.json") + ": the default size: " + e.what());
    }
    index.defaults.max_sequence_length = captions.config().max_length;
    auto decoder = std::make_shared<const CodecDecoder>(VideoCodec(index.codec), c);
    return TextToVideo(std::make_shared<CaptionTextEncoder>(std::move(captions)), std::move(transformer),
                       std::move(decoder), index.defaults, index.prediction);
  }

#if !DITKIT_HAVE_SENTENCEPIECE
  throw std::runtime_error("this build of ditkit cannot tokenize prompts for a Wan folder (no sentencepiece)");
#else
  auto text_encoder = std::make_shared<Umt5TextEncoder>(dir, dtype);
  WanTransformer transformer = WanTransformer::load(sub(dir, "transformer"), device, dtype);
  WanVae vae = WanVae::load(sub(dir, "vae"), device, dtype);
  if (text_encoder->dim() != transformer.config().text_dim)
    throw std::runtime_error(dir + ": the text encoder's d_model " + std::to_string(text_encoder->dim()) +
                             " differs from the transformer's text_dim " +
                             std::to_string(transformer.config().text_dim));
  if (vae.config().z_dim != transformer.config().in_channels)
    throw std::runtime_error(dir + ": the VAE's z_dim " + std::to_string(vae.config().z_dim) +
                             " differs from the transformer's in_channels " +
                             std::to_string(transformer.config().in_channels));
  auto decoder = std::make_shared<const WanVaeDecoder>(std::move(vae), transformer.config().patch_size);
  return TextToVideo(std::move(text_encoder), std::move(transformer), std::move(decoder), wan_defaults(dir),
                     "velocity");
#endif
}

TextToVideoOptions TextToVideo::default_options() const {
  TextToVideoOptions o;
  o.negative_prompt = defaults_.negative_prompt;
  o.width = defaults_.width;
  o.height = defaults_.height;
  o.frames = defaults_.frames;
  o.max_sequence_length = defaults_.max_sequence_length;
  o.sampling.steps = defaults_.steps;
  o.sampling.guidance = defaults_.guidance;
  o.sampling.shift = defaults_.shift;
  o.sampling.scheduler = defaults_.scheduler;
  return o;
}

at::Tensor TextToVideo::encode_texts(const std::vector<std::string>& prompts, int64_t max_sequence_length) {
  if (max_sequence_length < 0)
    throw std::invalid_argument("max_sequence_length must be >= 0 (0: the model's), got " +
                                std::to_string(max_sequence_length));
  return text_encoder_->encode(prompts, max_sequence_length > 0 ? max_sequence_length : defaults_.max_sequence_length,
                               transformer_.device(), transformer_.dtype());
}

namespace {

// Runs one part of generate(); CUDA running out of memory there becomes an error that says which
// part, the size asked for, the allocator's numbers and what to lower.
template <typename F>
auto with_memory_advice(const char* part, const TextToVideoOptions& o, int64_t tokens, const std::string& advice,
                        F&& f) {
  try {
    return f();
  } catch (const c10::OutOfMemoryError& e) {
    std::string numbers = e.what_without_backtrace();
    numbers = numbers.substr(0, numbers.find('\n'));
    std::ostringstream m;
    m << "out of GPU memory during " << part << " of a " << o.width << "x" << o.height << ", " << o.frames
      << "-frame video (" << tokens << " tokens, "
      << 1 + (o.sampling.guidance > 1.0 ? 1 : 0) + (o.sampling.contrast_guidance > 0 ? 1 : 0)
      << " batched with guidance): " << numbers << " To fit, " << advice;
    throw OutOfGpuMemory(m.str());
  }
}

}  // namespace

at::Tensor TextToVideo::generate(const TextToVideoOptions& o, RecipeAttention* attention, const StepCallback& on_step,
                                 const SequenceParallel* parallel) {
  const std::vector<int64_t> latent_shape = decoder_->latent_shape(o.frames, o.height, o.width);
  const at::Device device = transformer_.device();
  const auto& p = transformer_.config().patch_size;
  // latent_shape is [1, C, F, H, W]
  const int64_t tokens = latent_shape[2] / p[0] * (latent_shape[3] / p[1]) * (latent_shape[4] / p[2]);
  timings_ = {};
  if (attention && !attention_weights_.empty()) attention->load_weights(attention_weights_);

  auto t0 = std::chrono::steady_clock::now();
  const bool guided = o.sampling.guidance > 1.0;
  const bool contrasted = o.sampling.contrast_guidance > 0;
  std::vector<std::string> prompts{o.prompt};
  if (guided) prompts.push_back(o.negative_prompt);
  if (contrasted) prompts.push_back(o.contrast_prompt);
  const at::Tensor texts = with_memory_advice("text encoding", o, tokens, "encode on the CPU (device cpu).",
                                              [&] { return encode_texts(prompts, o.max_sequence_length); });
  const at::Tensor context = texts.narrow(0, 0, 1);
  const at::Tensor uncond = guided ? texts.narrow(0, 1, 1) : at::Tensor();
  const at::Tensor contrast = contrasted ? texts.narrow(0, texts.size(0) - 1, 1) : at::Tensor();
  timings_.text = seconds_since(t0, device);

  t0 = std::chrono::steady_clock::now();
  SamplingOptions sampling = o.sampling;
  sampling.prediction = prediction_;
  at::Tensor latents = with_memory_advice(
      "denoising", o, tokens,
      "lower the frames, width or height (the tokens grow with each), or use a sparse attention recipe.", [&] {
        return sample(transformer_, latent_shape, context, uncond, sampling, attention, on_step, parallel, contrast);
      });
  timings_.denoise = seconds_since(t0, device);
  // Every rank holds the same latents; decoding them once is enough (the VAE is not split).
  if (parallel && parallel->rank() != 0) return {};

  t0 = std::chrono::steady_clock::now();
  at::Tensor frames = with_memory_advice(
      "decoding", o, tokens,
      "decode fewer latent frames at once (vae_chunk, now " + std::to_string(o.vae_chunk) +
          ") or lower the frames, width or height.",
      [&] { return decoder_->decode(latents, o.vae_chunk); });
  timings_.decode = seconds_since(t0, device);
  return frames;
}

}  // namespace ditkit
