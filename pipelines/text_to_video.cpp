#include "pipelines/text_to_video.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>

#include "ditkit_config.h"
#if DITKIT_HAVE_SENTENCEPIECE
#include "dit/tokenizer.h"
#endif

namespace ditkit {

#if !DITKIT_HAVE_SENTENCEPIECE
class Tokenizer {};  // this build cannot tokenize; load() says so
#endif

namespace {

std::string sub(const std::string& dir, const char* name) { return (std::filesystem::path(dir) / name).string(); }

// Waits for the device so that wall times measure the work, not the launches.
double seconds_since(std::chrono::steady_clock::time_point t0, at::Device device) {
  if (device.is_cuda()) at::empty({1}, at::TensorOptions().device(device)).cpu();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_sizes(const TextToVideoOptions& o, const WanVaeConfig& vae) {
  const int64_t s = vae.spatial_factor() * 2;  // the VAE's factor times the DiT's 2x2 patches
  if (o.width <= 0 || o.height <= 0 || o.width % s || o.height % s)
    throw std::invalid_argument("video size " + std::to_string(o.width) + "x" + std::to_string(o.height) +
                                ": width and height must be positive multiples of " + std::to_string(s));
  const int64_t t = vae.temporal_factor();
  if (o.frames < 1 || (o.frames - 1) % t)
    throw std::invalid_argument("frames " + std::to_string(o.frames) + ": the VAE makes 1 + " + std::to_string(t) +
                                "k frames (e.g. 1, 5, ..., 81)");
}

}  // namespace

TextToVideo TextToVideo::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  if (!std::filesystem::is_directory(dir))
    throw std::runtime_error("model folder '" + dir + "' does not exist");
#if DITKIT_HAVE_SENTENCEPIECE
  auto tokenizer = std::make_shared<const Tokenizer>(sub(dir, "tokenizer"));
#else
  throw std::runtime_error("this build of ditkit cannot tokenize prompts (built without sentencepiece)");
  std::shared_ptr<const Tokenizer> tokenizer;
#endif
  UMT5Encoder text_encoder = UMT5Encoder::load(sub(dir, "text_encoder"), at::kCPU, dtype);
  WanTransformer transformer = WanTransformer::load(sub(dir, "transformer"), device, dtype);
  WanVae vae = WanVae::load(sub(dir, "vae"), device, dtype);
  if (text_encoder.config().d_model != transformer.config().text_dim)
    throw std::runtime_error(dir + ": the text encoder's d_model " + std::to_string(text_encoder.config().d_model) +
                             " differs from the transformer's text_dim " +
                             std::to_string(transformer.config().text_dim));
  if (vae.config().z_dim != transformer.config().in_channels)
    throw std::runtime_error(dir + ": the VAE's z_dim " + std::to_string(vae.config().z_dim) +
                             " differs from the transformer's in_channels " +
                             std::to_string(transformer.config().in_channels));
  return TextToVideo(std::move(tokenizer), std::move(text_encoder), std::move(transformer), std::move(vae));
}

at::Tensor TextToVideo::encode_texts(const std::vector<std::string>& prompts, int64_t max_sequence_length) {
#if DITKIT_HAVE_SENTENCEPIECE
  TokenBatch tokens = tokenizer_->encode(prompts, max_sequence_length);
  // The encoder lives on the CPU between prompts; on the GPU it visits only to encode.
  const at::Device device = transformer_.device();
  UMT5Encoder encoder = device.is_cuda() ? text_encoder_.to(device) : text_encoder_;
  return encoder.encode_prompts(tokens.input_ids, tokens.attention_mask).to(device, transformer_.dtype());
#else
  throw std::runtime_error("this build of ditkit cannot tokenize prompts (built without sentencepiece)");
#endif
}

at::Tensor TextToVideo::generate(const TextToVideoOptions& o, RecipeAttention* attention,
                                 const StepCallback& on_step) {
  check_sizes(o, vae_.config());
  const at::Device device = transformer_.device();
  timings_ = {};

  auto t0 = std::chrono::steady_clock::now();
  const bool guided = o.sampling.guidance > 1.0;
  std::vector<std::string> prompts{o.prompt};
  if (guided) prompts.push_back(o.negative_prompt);
  const at::Tensor texts = encode_texts(prompts, o.max_sequence_length);
  const at::Tensor context = texts.narrow(0, 0, 1);
  const at::Tensor uncond = guided ? texts.narrow(0, 1, 1) : at::Tensor();
  timings_.text = seconds_since(t0, device);

  const int64_t s = vae_.config().spatial_factor(), t = vae_.config().temporal_factor();
  const std::vector<int64_t> latent_shape{1, vae_.config().z_dim, (o.frames - 1) / t + 1, o.height / s, o.width / s};
  t0 = std::chrono::steady_clock::now();
  at::Tensor latents = sample(transformer_, latent_shape, context, uncond, o.sampling, attention, on_step);
  timings_.denoise = seconds_since(t0, device);

  t0 = std::chrono::steady_clock::now();
  at::Tensor frames = vae_.decode(latents, o.vae_chunk);
  timings_.decode = seconds_since(t0, device);
  return frames;
}

}  // namespace ditkit
