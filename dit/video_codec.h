// The shipped model's autoencoder: a fixed, exactly invertible space-to-depth transform instead of
// a learned VAE. Each 4x4x4 block of an RGB clip (frames x rows x columns) becomes the 3*4*4*4 = 192
// channels of one latent voxel, times a fixed scale. There is nothing to train or store, decoding
// costs a reshape, and a round trip is exact; the DiT's own patch embedding is the learned map
// from those pixels to its tokens. (An orthonormal mixing of the channels would add nothing:
// Gaussian noise stays the same Gaussian under it, and the DiT's first and last linear layers
// absorb it.) docs/shipped_model.md says why this suffices for the shipped model.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ditkit {

// The "codec" object of a shipped model's model_index.json:
// {"type": "space_to_depth", "factor": [4, 4, 4], "scale": 1.0}.
struct VideoCodecConfig {
  std::array<int64_t, 3> factor = {4, 4, 4};  // frames, rows, columns per latent voxel
  // latents = pixels in [-1, 1] * scale: the trainer may set 1 / (the data's standard deviation)
  // so that latents have unit variance like the noise (what a VAE's scaling_factor does).
  double scale = 1.0;

  int64_t latent_channels() const { return 3 * factor[0] * factor[1] * factor[2]; }
};

// Reads the codec object; `where` names it in errors (std::runtime_error naming the field).
VideoCodecConfig video_codec_config_from_json(const nlohmann::json& codec, const std::string& where);
nlohmann::json video_codec_config_to_json(const VideoCodecConfig& config);

class VideoCodec {
 public:
  // Throws std::invalid_argument for factors < 1 or a scale that is not positive and finite.
  explicit VideoCodec(VideoCodecConfig config = {});

  // video [B, 3, T, H, W] (any floating dtype, any device) -> latents [B, 192, T/4, H/4, W/4] in the
  // same dtype and device. T, H and W must be multiples of the factors; errors
  // (std::invalid_argument) say which sizes the codec takes.
  at::Tensor encode(const at::Tensor& video) const;

  // latents [B, 192, F, h, w] -> video [B, 3, 4F, 4h, 4w]: the exact inverse of encode() (exact
  // in floating point for a power-of-two scale), not clamped.
  at::Tensor decode_float(const at::Tensor& latents) const;

  // One video: latents [1, 192, F, h, w] -> frames uint8 [4F, 4h, 4w, 3] (RGB) on the CPU, pixels
  // ((x / 2 + 0.5).clamp(0, 1) * 255) rounded half to even: WanVae::decode's contract.
  at::Tensor decode(const at::Tensor& latents) const;

  // The latent shape [1, 192, F, h, w] of a video of this size, or std::invalid_argument naming
  // the sizes the codec takes (multiples of the factors).
  std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const;

  const VideoCodecConfig& config() const { return config_; }

 private:
  VideoCodecConfig config_;
};

}  // namespace ditkit
