// Wan2.1's VAE decoder, one module per class, bottom-up as diffusers' autoencoder_kl_wan.py has
// them: weights -> causal conv + feature cache -> RMS norm -> resample -> residual block ->
// attention block -> decoder -> model. Each forward does diffusers' operations in diffusers'
// dtypes, so fp32 agrees to rounding.
//
// The feature cache. diffusers decodes one latent frame per pass; every causal convolution with a
// temporal kernel of 3 keeps the last two frames of its input from earlier passes, so a pass sees
// the same inputs as a convolution over the whole sequence with two zero frames in front. The
// temporal upsamplers (upsample3d) are the exception: the first latent frame passes through them
// without being doubled, and their time_conv starts its history with the second frame. That is why
// the video has 1 + 4 (F - 1) frames. Both rules are expressed here per frame, not per pass, so a
// pass may take any number of latent frames and still give diffusers' result.
#include "dit/checked_checkpoint.h"
#include "dit/model_weights.h"
#include "dit/config_json.h"
#include "dit/wan_vae.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "dit/safetensors.h"

namespace ditkit {
namespace {

using cfg::check_run_dtype;
using cfg::fail;
using cfg::field;
using cfg::read_int;
using cfg::read_list;
using cfg::shape_str;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Config reading: the transformer's wan_config.cpp conventions (errors name the file and field).

std::string list_str(const std::vector<int64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

// The config values the weight shapes follow from, for error messages.
std::string describe(const WanVaeConfig& c) {
  std::ostringstream s;
  s << "base_dim " << c.base_dim << " (decoder " << c.decoder_dim() << "), z_dim " << c.z_dim << ", dim_mult "
    << list_str(c.dim_mult) << ", num_res_blocks " << c.num_res_blocks << ", temperal_downsample [";
  for (size_t i = 0; i < c.temperal_downsample.size(); ++i)
    s << (i ? ", " : "") << (c.temperal_downsample[i] ? "true" : "false");
  s << "]";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Weights: from a checkpoint or drawn at random (dit/model_weights.h).

// How a weight starts when drawn: PyTorch's conv init (uniform, bound 1/sqrt(fan_in)), or ones
// (norm gammas).
struct Init {
  enum Kind { kUniform, kOnes } kind;
  int64_t fan_in = 1;
};

using Weights = ModelWeights<Init>;

at::Tensor draw(const Init& init, at::IntArrayRef shape, at::Generator& generator) {
  if (init.kind == Init::kOnes) return at::ones(shape, at::kFloat);
  const double bound = 1.0 / std::sqrt(double(init.fan_in));
  return at::empty(shape, at::kFloat).uniform_(-bound, bound, generator);
}

// ---------------------------------------------------------------------------------------------
// The feature cache of one decode: a slot per causal convolution with a temporal kernel, taken in
// the same order on every pass (diffusers' feat_cache / feat_idx).

struct FeatureCache {
  std::deque<at::Tensor> slots;  // a deque keeps references to earlier slots valid as it grows
  size_t next = 0;
  bool first_pass = true;  // this pass holds latent frame 0

  void start_pass(bool first) {
    next = 0;
    first_pass = first;
  }
  at::Tensor& slot() {
    if (next == slots.size()) slots.emplace_back();
    return slots[next++];
  }
};

// WanCausalConv3d: zero padding k_t - 1 frames in front (none behind), k/2 on each spatial side.
// With a cache slot, the frames of earlier passes stand in for the zero frames.
struct CausalConv3d {
  at::Tensor weight, bias;
  int64_t kernel_t, pad_h, pad_w;

  CausalConv3d(Weights& w, const std::string& prefix, int64_t in, int64_t out, std::array<int64_t, 3> kernel)
      : weight(w(prefix + ".weight", {out, in, kernel[0], kernel[1], kernel[2]},
                 {Init::kUniform, in * kernel[0] * kernel[1] * kernel[2]})),
        bias(w(prefix + ".bias", {out}, {Init::kUniform, in * kernel[0] * kernel[1] * kernel[2]})),
        kernel_t(kernel[0]),
        pad_h(kernel[1] / 2),
        pad_w(kernel[2] / 2) {}

  // x [B, C, T, H, W]; a kernel of one frame needs no history, so takes no slot.
  at::Tensor operator()(const at::Tensor& x, FeatureCache* cache = nullptr) const {
    if (kernel_t == 1) return at::conv3d(x, weight, bias, {1, 1, 1}, {0, pad_h, pad_w});
    at::Tensor& history = cache->slot();
    at::Tensor input = history.defined() ? at::cat({history, x}, 2) : x;
    const int64_t keep = std::min(kernel_t - 1, input.size(2));
    const int64_t missing = kernel_t - 1 - (input.size(2) - x.size(2));
    history = input.narrow(2, input.size(2) - keep, keep).clone();  // a copy, so the pass's activations can go
    if (missing > 0) input = at::constant_pad_nd(input, {0, 0, 0, 0, missing, 0});
    return at::conv3d(input, weight, bias, {1, 1, 1}, {0, pad_h, pad_w});
  }
};

struct Conv2d {  // nn.Conv2d(in, out, k, padding=k/2)
  at::Tensor weight, bias;
  int64_t pad;

  Conv2d(Weights& w, const std::string& prefix, int64_t in, int64_t out, int64_t kernel)
      : weight(w(prefix + ".weight", {out, in, kernel, kernel}, {Init::kUniform, in * kernel * kernel})),
        bias(w(prefix + ".bias", {out}, {Init::kUniform, in * kernel * kernel})),
        pad(kernel / 2) {}

  at::Tensor operator()(const at::Tensor& x) const { return at::conv2d(x, weight, bias, {1, 1}, {pad, pad}); }
};

// WanRMS_norm (channel_first, no bias): F.normalize over the channels (in fp32 for half types,
// then rounded back), times sqrt(C), times gamma. gamma is [C, 1, 1, 1] for video, [C, 1, 1] for
// the attention block's images.
struct RmsNorm {
  at::Tensor gamma;
  double scale;

  RmsNorm(Weights& w, const std::string& prefix, int64_t dim, bool images)
      : gamma(w(prefix + ".gamma", images ? std::vector<int64_t>{dim, 1, 1} : std::vector<int64_t>{dim, 1, 1, 1},
                {Init::kOnes})),
        scale(std::sqrt(double(dim))) {}

  at::Tensor operator()(const at::Tensor& x) const {
    const bool upcast = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
    const at::Tensor xf = upcast ? x.to(at::kFloat) : x;
    const at::Tensor normalized = xf / at::linalg_vector_norm(xf, 2, {1}, true).clamp_min(1e-12);
    return normalized.to(x.scalar_type()) * scale * gamma;
  }
};

// ---------------------------------------------------------------------------------------------
// WanResidualBlock: RMS norm, SiLU, causal 3x3x3 conv, twice, plus a (1x1x1 conv) shortcut.

struct ResidualBlock {
  RmsNorm norm1, norm2;
  CausalConv3d conv1, conv2;
  std::optional<CausalConv3d> conv_shortcut;  // only where the width changes

  ResidualBlock(Weights& w, const std::string& prefix, int64_t in, int64_t out)
      : norm1(w, prefix + ".norm1", in, false),
        norm2(w, prefix + ".norm2", out, false),
        conv1(w, prefix + ".conv1", in, out, {3, 3, 3}),
        conv2(w, prefix + ".conv2", out, out, {3, 3, 3}) {
    if (in != out) conv_shortcut.emplace(w, prefix + ".conv_shortcut", in, out, std::array<int64_t, 3>{1, 1, 1});
  }

  at::Tensor operator()(const at::Tensor& x, FeatureCache& cache) const {
    const at::Tensor h = conv_shortcut ? (*conv_shortcut)(x) : x;
    at::Tensor y = conv1(at::silu(norm1(x)), &cache);
    y = conv2(at::silu(norm2(y)), &cache);
    return y + h;
  }
};

// WanAttentionBlock: single-head self-attention within each frame over its H*W positions.
struct AttentionBlock {
  RmsNorm norm;
  Conv2d to_qkv, proj;

  AttentionBlock(Weights& w, const std::string& prefix, int64_t dim)
      : norm(w, prefix + ".norm", dim, true),
        to_qkv(w, prefix + ".to_qkv", dim, 3 * dim, 1),
        proj(w, prefix + ".proj", dim, dim, 1) {}

  at::Tensor operator()(const at::Tensor& x) const {
    const int64_t B = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    at::Tensor frames = x.permute({0, 2, 1, 3, 4}).reshape({B * T, C, H, W});
    at::Tensor qkv = to_qkv(norm(frames)).reshape({B * T, 1, 3 * C, H * W}).permute({0, 1, 3, 2}).contiguous();
    std::vector<at::Tensor> q_k_v = qkv.chunk(3, -1);  // [B T, 1, H W, C] each
    at::Tensor out = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    out = proj(out.squeeze(1).permute({0, 2, 1}).reshape({B * T, C, H, W}));
    return out.view({B, T, C, H, W}).permute({0, 2, 1, 3, 4}) + x;
  }
};

// WanResample in the decoder's modes: upsample2d doubles H and W (nearest, then a 3x3 conv that
// halves the channels); upsample3d first doubles the frames with time_conv, a causal (3,1,1) conv
// to 2C channels whose halves become frames 2i and 2i+1.
struct Upsample {
  Conv2d resample;                        // resample.1 (resample.0 is the weightless upsampler)
  std::optional<CausalConv3d> time_conv;  // upsample3d only

  Upsample(Weights& w, const std::string& prefix, int64_t dim, bool temporal)
      : resample(w, prefix + ".resample.1", dim, dim / 2, 3) {
    if (temporal) time_conv.emplace(w, prefix + ".time_conv", dim, 2 * dim, std::array<int64_t, 3>{3, 1, 1});
  }

  at::Tensor operator()(at::Tensor x, FeatureCache& cache) const {
    if (time_conv) {
      // Latent frame 0 is not doubled and stays out of time_conv's history (diffusers' "Rep").
      const int64_t skip = cache.first_pass ? 1 : 0;
      const int64_t B = x.size(0), C = x.size(1), T = x.size(2) - skip, H = x.size(3), W = x.size(4);
      if (T > 0) {
        at::Tensor doubled = (*time_conv)(x.narrow(2, skip, T), &cache);
        doubled = doubled.view({B, 2, C, T, H, W}).permute({0, 2, 3, 1, 4, 5}).reshape({B, C, 2 * T, H, W});
        x = skip ? at::cat({x.narrow(2, 0, 1), doubled}, 2) : doubled;
      } else {
        cache.slot();  // keep the slot order of the passes that do reach time_conv
      }
    }
    const int64_t B = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
    at::Tensor frames = x.permute({0, 2, 1, 3, 4}).reshape({B * T, C, H, W});
    // Nearest-exact at an integer factor copies pixels, so diffusers' fp32 round trip around it
    // (WanUpsample) changes nothing and is skipped.
    frames = resample(at::_upsample_nearest_exact2d(frames, {2 * H, 2 * W}, 2.0, 2.0));
    return frames.view({B, T, -1, 2 * H, 2 * W}).permute({0, 2, 1, 3, 4});
  }
};

// WanUpBlock: num_res_blocks + 1 residual blocks, then the upsampler (all but the last block).
struct UpBlock {
  std::vector<ResidualBlock> resnets;
  std::optional<Upsample> upsampler;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// WanDecoder3d behind post_quant_conv: conv_in -> mid block (residual, attention, residual) ->
// up blocks -> RMS norm, SiLU, conv_out to RGB.

struct WanVae::Model {
  WanVaeConfig config;
  at::Device device;
  at::ScalarType dtype;
  CausalConv3d post_quant_conv, conv_in;
  std::vector<ResidualBlock> mid_resnets;
  AttentionBlock mid_attention;
  std::vector<UpBlock> up_blocks;
  RmsNorm norm_out;
  CausalConv3d conv_out;

  // Decoder widths: dims = d * ([mult.back()] + reversed(mult)); block i goes dims[i] -> dims[i+1],
  // taking half of dims[i] after the first block because each upsampler halves the channels.
  static std::vector<int64_t> dims(const WanVaeConfig& c) {
    std::vector<int64_t> d = {c.decoder_dim() * c.dim_mult.back()};
    for (auto m = c.dim_mult.rbegin(); m != c.dim_mult.rend(); ++m) d.push_back(c.decoder_dim() * *m);
    return d;
  }

  Model(Weights& w, const WanVaeConfig& c, at::Device device, at::ScalarType dtype)
      : config(c),
        device(device),
        dtype(dtype),
        post_quant_conv(w, "post_quant_conv", c.z_dim, c.z_dim, {1, 1, 1}),
        conv_in(w, "decoder.conv_in", c.z_dim, dims(c)[0], {3, 3, 3}),
        mid_attention(w, "decoder.mid_block.attentions.0", dims(c)[0]),
        norm_out(w, "decoder.norm_out", dims(c).back(), false),
        conv_out(w, "decoder.conv_out", dims(c).back(), 3, {3, 3, 3}) {
    const std::vector<int64_t> d = dims(c);
    for (int i = 0; i < 2; ++i)
      mid_resnets.emplace_back(w, "decoder.mid_block.resnets." + std::to_string(i), d[0], d[0]);
    const size_t n = c.dim_mult.size();
    for (size_t i = 0; i < n; ++i) {
      const std::string prefix = "decoder.up_blocks." + std::to_string(i);
      UpBlock block;
      int64_t in = i > 0 ? d[i] / 2 : d[i];
      for (int64_t r = 0; r <= c.num_res_blocks; ++r, in = d[i + 1])
        block.resnets.emplace_back(w, prefix + ".resnets." + std::to_string(r), in, d[i + 1]);
      if (i + 1 < n) block.upsampler.emplace(w, prefix + ".upsamplers.0", d[i + 1], c.temperal_downsample[n - 2 - i]);
      up_blocks.push_back(std::move(block));
    }
  }

  // One pass: de-normalised latent frames [B, z, n, H, W] -> video frames, clamped to [-1, 1].
  at::Tensor pass(const at::Tensor& z, FeatureCache& cache) const {
    at::Tensor x = conv_in(post_quant_conv(z), &cache);
    x = mid_resnets[0](x, cache);
    x = mid_attention(x);
    x = mid_resnets[1](x, cache);
    for (const UpBlock& block : up_blocks) {
      for (const ResidualBlock& resnet : block.resnets) x = resnet(x, cache);
      if (block.upsampler) x = (*block.upsampler)(x, cache);
    }
    x = conv_out(at::silu(norm_out(x)), &cache);
    return x.clamp(-1.0, 1.0);
  }

  // WanPipeline: latents / (1 / std) + mean in the VAE's dtype, the reciprocal taken in fp32.
  at::Tensor denormalize(const at::Tensor& latents) const {
    const at::Tensor x = latents.to(device, dtype);
    auto channel = [&](const std::vector<double>& v) {
      return at::tensor(v, at::kDouble).to(at::kFloat).view({1, -1, 1, 1, 1});
    };
    return x / (1.0 / channel(config.latents_std)).to(device, dtype) + channel(config.latents_mean).to(device, dtype);
  }

  // Checks latents [B, z_dim, F, H, W] and chunk, then hands each pass's output to `take`.
  template <typename Take>
  void decode(const at::Tensor& latents, int64_t chunk, const char* who, Take take) const {
    if (latents.dim() != 5 || latents.size(1) != config.z_dim || latents.numel() == 0)
      throw std::invalid_argument(std::string(who) + ": latents must be [B, " + std::to_string(config.z_dim) +
                                  ", F, H, W] (z_dim " + std::to_string(config.z_dim) + ") with F, H, W >= 1, got " +
                                  shape_str(latents.sizes()));
    if (chunk < 1)
      throw std::invalid_argument(std::string(who) + ": chunk must be >= 1 latent frame, got " + std::to_string(chunk));
    const at::Tensor z = denormalize(latents);
    FeatureCache cache;
    for (int64_t start = 0; start < z.size(2); start += chunk) {
      cache.start_pass(start == 0);
      take(pass(z.narrow(2, start, std::min(chunk, z.size(2) - start)), cache));
    }
  }
};

namespace {

}  // namespace

int64_t WanVaeConfig::spatial_factor() const { return int64_t(1) << (dim_mult.size() - 1); }

int64_t WanVaeConfig::temporal_factor() const {
  int64_t factor = 1;
  for (bool t : temperal_downsample) factor *= t ? 2 : 1;
  return factor;
}

void validate_wan_vae_config(const WanVaeConfig& c, const std::string& where) {
  // The decoder halves each width after an upsampler, so widths below 2 would vanish.
  if (c.base_dim < 2) fail(where, "base_dim", "must be >= 2, got " + std::to_string(c.base_dim));
  if (c.decoder_base_dim != 0 && c.decoder_base_dim < 2)
    fail(where, "decoder_base_dim", "must be null or >= 2, got " + std::to_string(c.decoder_base_dim));
  if (c.z_dim < 1) fail(where, "z_dim", "must be >= 1, got " + std::to_string(c.z_dim));
  if (c.dim_mult.empty() || c.dim_mult.size() > 8)
    fail(where, "dim_mult", "must hold 1 to 8 multipliers, got " + list_str(c.dim_mult));
  for (int64_t m : c.dim_mult)
    if (m < 1) fail(where, "dim_mult", "must hold integers >= 1, got " + list_str(c.dim_mult));
  if (c.num_res_blocks < 0) fail(where, "num_res_blocks", "must be >= 0, got " + std::to_string(c.num_res_blocks));
  if (c.temperal_downsample.size() != c.dim_mult.size() - 1)
    fail(where, "temperal_downsample",
         "must hold one flag per resolution change, len(dim_mult) - 1 = " + std::to_string(c.dim_mult.size() - 1) +
             ", got " + std::to_string(c.temperal_downsample.size()));
  auto check_per_channel = [&](const std::vector<double>& values, const char* name, bool positive) {
    if (int64_t(values.size()) != c.z_dim)
      fail(where, name,
           "must hold z_dim = " + std::to_string(c.z_dim) + " numbers, got " + std::to_string(values.size()));
    for (double x : values)
      if (!std::isfinite(x) || (positive && !(x > 0)))
        fail(where, name,
             std::string("must hold finite numbers") + (positive ? " > 0" : "") + ", got " + std::to_string(x));
  };
  check_per_channel(c.latents_mean, "latents_mean", false);
  check_per_channel(c.latents_std, "latents_std", true);
}

WanVaeConfig load_wan_vae_config(const std::string& path) {
  const json config = cfg::read_config_json(path);
  if (const json* name = field(config, "_class_name"); name && *name != "AutoencoderKLWan")
    fail(path, "_class_name", "is " + name->dump() + ", not \"AutoencoderKLWan\" (is this the vae/ folder?)");
  if (const json* residual = field(config, "is_residual"); residual && *residual != false)
    fail(path, "is_residual", "is " + residual->dump() + ": Wan2.2's VAE is not supported (it must be false)");
  if (const json* patch = field(config, "patch_size"))
    fail(path, "patch_size", "is " + patch->dump() + ": Wan2.2's patchified VAE is not supported (it must be null)");
  if (const json* out = field(config, "out_channels"); out && *out != 3)
    fail(path, "out_channels", "must be 3 (RGB frames), got " + out->dump());

  WanVaeConfig c;
  read_int(config, "base_dim", c.base_dim, path);
  if (const json* d = field(config, "decoder_base_dim")) {
    read_int(config, "decoder_base_dim", c.decoder_base_dim, path);
    if (c.decoder_base_dim < 2) fail(path, "decoder_base_dim", "must be null or >= 2, got " + d->dump());
  }
  read_int(config, "z_dim", c.z_dim, path);
  read_list(
      config, "dim_mult", c.dim_mult, [](const json& e) { return e.is_number_integer(); }, "integers", path);
  read_int(config, "num_res_blocks", c.num_res_blocks, path);
  read_list(
      config, "temperal_downsample", c.temperal_downsample, [](const json& e) { return e.is_boolean(); },
      "true/false flags", path);
  read_list(
      config, "latents_mean", c.latents_mean, [](const json& e) { return e.is_number(); }, "numbers", path);
  read_list(
      config, "latents_std", c.latents_std, [](const json& e) { return e.is_number(); }, "numbers", path);
  std::vector<double> attn_scales;  // checked for its type only: the decoder does not use it
  read_list(
      config, "attn_scales", attn_scales, [](const json& e) { return e.is_number(); }, "numbers", path);
  validate_wan_vae_config(c, path);
  // Pipelines size latents by these two; they must be what the layers give.
  const std::pair<const char*, int64_t> factors[] = {{"scale_factor_spatial", c.spatial_factor()},
                                                     {"scale_factor_temporal", c.temporal_factor()}};
  for (const auto& [name, derived] : factors)
    if (const json* value = field(config, name); value && *value != derived)
      fail(path, name, "is " + value->dump() + " but dim_mult and temperal_downsample give " + std::to_string(derived));
  return c;
}

WanVae WanVae::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "WanVae::load");
  const WanVaeConfig config = load_wan_vae_config((std::filesystem::path(dir) / "config.json").string());
  SafetensorsCheckpoint checkpoint = open_safetensors(dir);
  CheckedCheckpoint tensors(checkpoint, describe(config), "a diffusers-format Wan2.1 VAE");
  Weights weights(tensors, device, [dtype](const std::string&) { return dtype; });
  auto model = std::make_shared<const Model>(weights, config, device, dtype);
  // Only the decoder's tensors must all be used: the encoder's are not ours to read.
  tensors.check_all_taken(
      [](const std::string& key) { return key.rfind("decoder.", 0) == 0 || key.rfind("post_quant_conv.", 0) == 0; },
      "decoder tensors");
  return WanVae(std::move(model));
}

WanVae WanVae::random(const WanVaeConfig& config, uint64_t seed, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "WanVae::random");
  validate_wan_vae_config(config, "WanVae::random");
  Weights weights(seed, draw, device, [dtype](const std::string&) { return dtype; });
  return WanVae(std::make_shared<const Model>(weights, config, device, dtype));
}

const WanVaeConfig& WanVae::config() const { return model_->config; }
at::Device WanVae::device() const { return model_->device; }
at::ScalarType WanVae::dtype() const { return model_->dtype; }

at::Tensor WanVae::decode_float(const at::Tensor& latents, int64_t chunk) const {
  std::vector<at::Tensor> parts;
  model_->decode(latents, chunk, "WanVae::decode_float", [&](at::Tensor part) { parts.push_back(std::move(part)); });
  return at::cat(parts, 2);
}

at::Tensor WanVae::decode(const at::Tensor& latents, int64_t chunk) const {
  if (latents.dim() == 5 && latents.size(0) != 1)
    throw std::invalid_argument("WanVae::decode: takes one video, latents [1, z_dim, F, H, W], got " +
                                shape_str(latents.sizes()) + " (decode_float takes a batch)");
  std::vector<at::Tensor> parts;
  model_->decode(latents, chunk, "WanVae::decode", [&](const at::Tensor& part) {
    // diffusers' postprocess: (x * 0.5 + 0.5).clamp(0, 1) in the VAE's dtype, then fp32 numpy
    // (x * 255).round() (half to even, as at::round) to uint8.
    at::Tensor pixels = ((part[0] * 0.5 + 0.5).clamp(0.0, 1.0).to(at::kFloat) * 255.0).round().to(at::kByte);
    parts.push_back(pixels.permute({1, 2, 3, 0}).to(at::kCPU).contiguous());  // [n, H, W, 3]
  });
  return at::cat(parts, 0);
}

}  // namespace ditkit
