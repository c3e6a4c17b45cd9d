// The Wan2.1 VAE decoder, numerically the same as diffusers' AutoencoderKLWan.decode (0.42) after
// WanPipeline's latent de-normalisation, run chunk by chunk over latent frames with the causal
// convolutions' feature cache carried from chunk to chunk, so memory is bounded by the chunk.
// Weights are named by their diffusers checkpoint keys; the modules live in wan_vae.cpp.
// The encoder is not implemented (text-to-video never encodes).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ditkit {

// The fields of a diffusers vae/config.json that shape the decoder. Defaults are diffusers'
// constructor defaults, which are Wan2.1's VAE.
struct WanVaeConfig {
  int64_t base_dim = 96;
  int64_t decoder_base_dim = 0;  // 0: base_dim (config.json's null)
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult = {1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<bool> temperal_downsample = {false, true, true};  // diffusers' spelling; the decoder reverses it
  std::vector<double> latents_mean = {-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                      0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
  std::vector<double> latents_std = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

  int64_t decoder_dim() const { return decoder_base_dim > 0 ? decoder_base_dim : base_dim; }
  // Pixels per latent row/column (8 for Wan2.1) and video frames per latent frame after the
  // first (4): T = 1 + temporal_factor() * (F - 1).
  int64_t spatial_factor() const;
  int64_t temporal_factor() const;
};

// Reads a diffusers vae/config.json. Fields it does not know are ignored, as are dropout
// (inference) and attn_scales (only diffusers' encoder adds attention at those scales; its
// decoder never reads the field). Wan2.2's VAE (is_residual true, a patch_size) and anything but 3 RGB output
// channels are refused. Throws std::runtime_error naming the file and the field on a missing file,
// bad JSON, a field of the wrong type or a value out of range.
WanVaeConfig load_wan_vae_config(const std::string& config_json_path);

// Throws std::runtime_error naming `where` and the field when a value is out of range.
void validate_wan_vae_config(const WanVaeConfig& config, const std::string& where);

class WanVae {
 public:
  // dir: a diffusers vae/ folder (config.json + diffusion_pytorch_model.safetensors). dtype:
  // float32, bfloat16 or float16; every weight is converted to it (diffusers keeps no VAE module in
  // fp32). Every decoder tensor's key, shape and dtype is checked against the config, and decoder
  // tensors the config does not account for are refused; encoder.* and quant_conv.* are left
  // unread. Errors (std::runtime_error) name the file and the tensor.
  static WanVae load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // Random weights for speed tests without a checkpoint: PyTorch's default convolution init
  // (uniform within 1/sqrt(fan_in)) and unit norms, drawn on the CPU from `seed`.
  static WanVae random(const WanVaeConfig& config, uint64_t seed, at::Device device, at::ScalarType dtype);

  // latents [B, z_dim, F, H, W] in the DiT's space (normalised; de-normalised here with the
  // config's latents_mean/std as WanPipeline does) -> video [B, 3, 1 + 4 (F - 1), 8 H, 8 W] in
  // [-1, 1], in the model's dtype on its device: what diffusers' vae.decode returns.
  // `chunk` latent frames are decoded per pass (diffusers: 1); any chunk >= 1 gives the same
  // result, larger ones trade memory for fewer, larger convolutions. Bad shapes or chunk < 1
  // throw std::invalid_argument.
  at::Tensor decode_float(const at::Tensor& latents, int64_t chunk = 1) const;

  // One video: latents [1, z_dim, F, H, W] -> frames uint8 [T, 8 H, 8 W, 3] (RGB) on the CPU, the
  // video writer's and the C ABI's layout. Pixels are ((x / 2 + 0.5).clamp(0, 1) * 255) rounded
  // half to even, exactly diffusers' postprocess_video(output_type="pil") (export_to_video on
  // "np" output truncates instead, up to one level darker). Each chunk is converted and moved to
  // the CPU as soon as it is decoded, so no float video is ever whole on the device.
  at::Tensor decode(const at::Tensor& latents, int64_t chunk = 1) const;

  const WanVaeConfig& config() const;
  at::Device device() const;
  at::ScalarType dtype() const;

 private:
  struct Model;  // the module tree, defined in wan_vae.cpp
  explicit WanVae(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable once built, so copies share it
};

}  // namespace ditkit
