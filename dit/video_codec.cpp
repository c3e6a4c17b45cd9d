#include "dit/video_codec.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "dit/config_json.h"

namespace ditkit {
namespace {

using cfg::fail;
using cfg::shape_str;

const char* const kAxes[] = {"frames", "height", "width"};

}  // namespace

VideoCodecConfig video_codec_config_from_json(const nlohmann::json& codec, const std::string& where) {
  if (!codec.is_object()) throw std::runtime_error(where + ": must be a JSON object, got " + codec.dump());
  const nlohmann::json* type = cfg::field(codec, "type");
  if (!type || *type != "space_to_depth")
    fail(where, "type",
         "must be \"space_to_depth\" (the only codec ditkit has), got " +
             (type ? type->dump() : std::string("nothing")));
  VideoCodecConfig c;
  std::vector<int64_t> factor(c.factor.begin(), c.factor.end());
  cfg::read_list<int64_t>(
      codec, "factor", factor, [](const nlohmann::json& e) { return e.is_number_integer() && e.get<int64_t>() >= 1; },
      "integers >= 1", where);
  if (factor.size() != 3) fail(where, "factor", "must list 3 integers (frames, rows, columns)");
  for (int i = 0; i < 3; ++i) c.factor[i] = factor[size_t(i)];
  cfg::read_double(codec, "scale", c.scale, where);
  if (!(c.scale > 0) || !std::isfinite(c.scale))
    fail(where, "scale", "must be a positive number, got " + std::to_string(c.scale));
  return c;
}

nlohmann::json video_codec_config_to_json(const VideoCodecConfig& c) {
  return {{"type", "space_to_depth"}, {"factor", c.factor}, {"scale", c.scale}};
}

VideoCodec::VideoCodec(VideoCodecConfig config) : config_(config) {
  for (int i = 0; i < 3; ++i)
    if (config_.factor[i] < 1)
      throw std::invalid_argument(std::string("VideoCodec: the ") + kAxes[i] + " factor must be >= 1, got " +
                                  std::to_string(config_.factor[i]));
  if (!(config_.scale > 0) || !std::isfinite(config_.scale))
    throw std::invalid_argument("VideoCodec: scale must be a positive number, got " + std::to_string(config_.scale));
}

std::vector<int64_t> VideoCodec::latent_shape(int64_t frames, int64_t height, int64_t width) const {
  const int64_t sizes[] = {frames, height, width};
  std::vector<int64_t> shape{1, config_.latent_channels()};
  for (int i = 0; i < 3; ++i) {
    const int64_t f = config_.factor[i];
    if (sizes[i] < 1 || sizes[i] % f != 0)
      throw std::invalid_argument(std::string(kAxes[i]) + " " + std::to_string(sizes[i]) +
                                  ": this model's codec takes positive multiples of " + std::to_string(f) + " (e.g. " +
                                  std::to_string(f) + ", " + std::to_string(2 * f) + ", ..., " + std::to_string(8 * f) +
                                  ")");
    shape.push_back(sizes[i] / f);
  }
  return shape;
}

at::Tensor VideoCodec::encode(const at::Tensor& video) const {
  if (video.dim() != 5 || video.size(1) != 3 || !at::isFloatingType(video.scalar_type()))
    throw std::invalid_argument("VideoCodec::encode: video must be floating [B, 3, T, H, W], got " +
                                std::string(c10::toString(video.scalar_type())) + " " + shape_str(video.sizes()));
  const std::vector<int64_t> s = latent_shape(video.size(2), video.size(3), video.size(4));
  const auto& f = config_.factor;
  // [B, c, F, ft, h, fh, w, fw] -> [B, c, ft, fh, fw, F, h, w]: channel = ((c * ft + dt) * fh + dh) * fw + dw.
  at::Tensor blocks = video.reshape({video.size(0), 3, s[2], f[0], s[3], f[1], s[4], f[2]})
                          .permute({0, 1, 3, 5, 7, 2, 4, 6})
                          .reshape({video.size(0), s[1], s[2], s[3], s[4]});
  return blocks * config_.scale;
}

at::Tensor VideoCodec::decode_float(const at::Tensor& latents) const {
  if (latents.dim() != 5 || latents.size(1) != config_.latent_channels() || latents.size(2) < 1 ||
      latents.size(3) < 1 || latents.size(4) < 1 || !at::isFloatingType(latents.scalar_type()))
    throw std::invalid_argument("VideoCodec::decode: latents must be floating [B, " +
                                std::to_string(config_.latent_channels()) + ", F, h, w], got " +
                                std::string(c10::toString(latents.scalar_type())) + " " + shape_str(latents.sizes()));
  const auto& f = config_.factor;
  const int64_t B = latents.size(0), F = latents.size(2), h = latents.size(3), w = latents.size(4);
  return (latents / config_.scale)
      .reshape({B, 3, f[0], f[1], f[2], F, h, w})
      .permute({0, 1, 5, 2, 6, 3, 7, 4})
      .reshape({B, 3, F * f[0], h * f[1], w * f[2]});
}

at::Tensor VideoCodec::decode(const at::Tensor& latents) const {
  if (latents.dim() != 5 || latents.size(0) != 1)
    throw std::invalid_argument("VideoCodec::decode: latents must be one video [1, " +
                                std::to_string(config_.latent_channels()) + ", F, h, w], got " +
                                shape_str(latents.sizes()));
  const at::Tensor video = decode_float(latents)[0].to(at::kCPU, at::kFloat);  // [3, T, H, W]
  at::Tensor pixels = ((video * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round().to(at::kByte);
  return pixels.permute({1, 2, 3, 0}).contiguous();
}

}  // namespace ditkit
