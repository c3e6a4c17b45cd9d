// The shipped model's codec: 4x4x4 space-to-depth, exact round trips, shapes, and errors that
// say which sizes it takes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "dit/video_codec.h"
#include "tests/model_test_support.h"

namespace ditkit {
namespace {

using testing_support::throws_with;

TEST(VideoCodec, ShapesOfTheShippedSize) {
  const VideoCodec codec;
  EXPECT_EQ(codec.config().latent_channels(), 192);
  EXPECT_EQ(codec.latent_shape(32, 128, 128), (std::vector<int64_t>{1, 192, 8, 32, 32}));
  const at::Tensor video = at::rand({2, 3, 8, 16, 12}) * 2 - 1;
  EXPECT_EQ(codec.encode(video).sizes(), (std::vector<int64_t>{2, 192, 2, 4, 3}));
}

TEST(VideoCodec, RoundTripIsExact) {
  const VideoCodec codec;
  const at::Tensor video = at::rand({2, 3, 8, 16, 12}) * 2 - 1;
  EXPECT_TRUE(at::equal(codec.decode_float(codec.encode(video)), video));
  // A non-contiguous input (a time slice) as well, and a power-of-two scale stays exact.
  const VideoCodec scaled(VideoCodecConfig{{4, 4, 4}, 2.0});
  const at::Tensor slice = video.narrow(2, 4, 4);
  EXPECT_TRUE(at::equal(scaled.decode_float(scaled.encode(slice)), slice));

  // uint8 frames -> [-1, 1] -> latents -> the same frames.
  const at::Tensor frames = at::randint(0, 256, {8, 16, 12, 3}, at::kByte);
  const at::Tensor pixels = (frames.permute({3, 0, 1, 2}).unsqueeze(0).to(at::kFloat) / 127.5 - 1.0);
  const at::Tensor back = codec.decode(codec.encode(pixels));
  ASSERT_EQ(back.sizes(), frames.sizes());
  EXPECT_EQ(back.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(back, frames));
}

// Each latent channel is one pixel of one colour at one offset in its 4x4x4 block.
TEST(VideoCodec, ChannelsAreBlockOffsets) {
  const VideoCodec codec;
  at::Tensor video = at::zeros({1, 3, 4, 4, 8});
  video[0][2][1][3][6] = 1.0;  // colour 2, frame 1, row 3, column 4 + 2 (second latent column)
  const at::Tensor latents = codec.encode(video);
  EXPECT_EQ(latents.sum().item<float>(), 1.0f);
  EXPECT_EQ(latents[0][((2 * 4 + 1) * 4 + 3) * 4 + 2][0][0][1].item<float>(), 1.0f);
  // Decoding clamps to [-1, 1] before quantising.
  EXPECT_EQ(codec.decode(codec.encode(at::full({1, 3, 4, 4, 4}, 3.0))).min().item<uint8_t>(), 255);
}

TEST(VideoCodec, SizesItCannotTakeSayWhichItCan) {
  const VideoCodec codec;
  EXPECT_TRUE(
      throws_with<std::invalid_argument>([&] { codec.latent_shape(33, 128, 128); }, {"frames 33", "multiples of 4"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        codec.encode(at::zeros({1, 3, 8, 18, 16}));
      },
      {"height 18", "multiples of 4"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        codec.encode(at::zeros({1, 4, 8, 16, 16}));
      },
      {"[B, 3, T, H, W]", "[1, 4, 8, 16, 16]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        codec.decode(at::zeros({1, 16, 2, 4, 4}));
      },
      {"[B, 192, F, h, w]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { codec.decode(at::zeros({2, 192, 2, 4, 4})); }, {"one video"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [] {
        VideoCodec(VideoCodecConfig{{4, 0, 4}, 1.0});
      },
      {"height factor"}));
}

TEST(VideoCodec, ConfigJson) {
  const VideoCodecConfig c = video_codec_config_from_json(
      nlohmann::json::parse(R"({"type": "space_to_depth", "factor": [2, 4, 4], "scale": 0.5})"),
      "model_index.json codec");
  EXPECT_EQ(c.factor, (std::array<int64_t, 3>{2, 4, 4}));
  EXPECT_EQ(c.scale, 0.5);
  EXPECT_EQ(video_codec_config_from_json(video_codec_config_to_json(c), "x").factor, c.factor);
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [] { video_codec_config_from_json(nlohmann::json::parse(R"({"type": "vae"})"), "model_index.json codec"); },
      {"model_index.json codec", "'type'", "space_to_depth"}));
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [] {
        video_codec_config_from_json(nlohmann::json::parse(R"({"type": "space_to_depth", "factor": [4, 4]})"), "c");
      },
      {"'factor'", "3 integers"}));
}

}  // namespace
}  // namespace ditkit
