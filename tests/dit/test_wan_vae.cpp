// The Wan2.1 VAE decoder against diffusers' golden run (tests/golden/wan_vae.py): float output,
// chunked decoding, uint8 frames, bf16, and the errors a bad checkpoint, config or input gets.
//
// Relative error throughout: max|a - b| / max|b|, with b the diffusers fp32 output.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/model_test_support.h"
#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "dit/wan_vae.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::relative_error;
using testing_support::throws_with;

const std::string kTiny = std::string(DITKIT_TEST_DATA) + "/wan_vae_tiny";

double mean_error(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return ((x - y).abs().mean() / y.abs().mean()).item<double>();
}

struct Golden {
  at::Tensor latents, decoded, frames, latents_1, decoded_1;
  double bf16_relative_error, bf16_mean_error;  // diffusers' own bf16 decode against its fp32 one
};

Golden golden() {
  SafetensorsFile io(kTiny + "/io.safetensors");
  return {io.get("latents"),
          io.get("decoded"),
          io.get("frames"),
          io.get("latents_1"),
          io.get("decoded_1"),
          std::stod(io.metadata().at("bf16_relative_error")),
          std::stod(io.metadata().at("bf16_mean_error"))};
}

TEST(WanVae, Fp32OnCpuMatchesDiffusers) {
  const Golden g = golden();
  const WanVae vae = WanVae::load(kTiny, at::kCPU, at::kFloat);
  const at::Tensor out = vae.decode_float(g.latents);
  ASSERT_EQ(out.sizes(), g.decoded.sizes());  // [1, 3, 1 + 4 * 2, 6 * 8, 5 * 8]
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const double err = relative_error(out, g.decoded);
  std::cout << "fp32 CPU vs diffusers fp32: max relative error " << err << "\n";
  EXPECT_LE(err, 1e-4);
}

// A one-frame latent is an image: only the first pass runs, and no frame is doubled.
TEST(WanVae, OneLatentFrameDecodesToOneFrame) {
  const Golden g = golden();
  const at::Tensor out = WanVae::load(kTiny, at::kCPU, at::kFloat).decode_float(g.latents_1);
  ASSERT_EQ(out.sizes(), g.decoded_1.sizes());
  const double err = relative_error(out, g.decoded_1);
  std::cout << "one frame, fp32 CPU vs diffusers: max relative error " << err << "\n";
  EXPECT_LE(err, 1e-4);
}

// diffusers decodes one latent frame per pass; ditkit's feature cache gives the same video for
// any pass size, up to the summation order of differently shaped convolutions. The tiny model's
// 3-channel RMS norms amplify rounding: diffusers' own fp32 decode differs from an fp64 one by
// 1.6e-5 in this measure, and chunks 2, 3 and all-at-once differ from chunk 1 by 1.3-1.5e-5.
TEST(WanVae, ChunkSizeDoesNotChangeTheVideo) {
  const Golden g = golden();
  const WanVae vae = WanVae::load(kTiny, at::kCPU, at::kFloat);
  const at::Tensor one = vae.decode_float(g.latents, 1);
  for (int64_t chunk : {2, 3, 100}) {
    const at::Tensor out = vae.decode_float(g.latents, chunk);
    ASSERT_EQ(out.sizes(), one.sizes()) << "chunk " << chunk;
    const double err = relative_error(out, one), golden_err = relative_error(out, g.decoded);
    std::cout << "chunk " << chunk << ": vs chunk 1 " << err << ", vs diffusers " << golden_err << "\n";
    EXPECT_LE(err, 5e-5) << "chunk " << chunk;
    EXPECT_LE(golden_err, 1e-4) << "chunk " << chunk;
  }
}

// Each video of a batch decodes as it would alone (to rounding, as above).
TEST(WanVae, BatchDecodesEachVideo) {
  const Golden g = golden();
  const WanVae vae = WanVae::load(kTiny, at::kCPU, at::kFloat);
  const at::Tensor batch = at::cat({g.latents, g.latents.flip(3)});
  const at::Tensor out = vae.decode_float(batch, 2);
  ASSERT_EQ(out.size(0), 2);
  EXPECT_LE(relative_error(out[0], g.decoded[0]), 1e-4);
  EXPECT_LE(relative_error(out[1], vae.decode_float(g.latents.flip(3))[0]), 5e-5);
}

// uint8 frames are diffusers' postprocess (x / 2 + 0.5, clamp, * 255, round half to even) of a
// float video that agrees to ~1e-6 absolute, so a pixel can differ only where x * 255 lies within
// that of a .5 boundary: at most one level, on a handful of the 51,840 values (measured: none at
// chunk 1, which is bit-exact, and 1 at chunk 3).
TEST(WanVae, FramesMatchDiffusersPostprocess) {
  const Golden g = golden();
  const WanVae vae = WanVae::load(kTiny, at::kCPU, at::kFloat);
  for (int64_t chunk : {1, 3}) {
    const at::Tensor frames = vae.decode(g.latents, chunk);
    ASSERT_EQ(frames.sizes(), g.frames.sizes());  // [9, 48, 40, 3]
    EXPECT_EQ(frames.scalar_type(), at::kByte);
    EXPECT_TRUE(frames.device().is_cpu());
    const at::Tensor diff = (frames.to(at::kInt) - g.frames.to(at::kInt)).abs();
    const int64_t off = diff.gt(0).sum().item<int64_t>();
    std::cout << "chunk " << chunk << ": " << off << " of " << frames.numel()
              << " pixel values differ from diffusers'\n";
    EXPECT_LE(diff.max().item<int>(), 1);
    EXPECT_LE(off, frames.numel() / 1000);
  }
}

// bf16 rounds where diffusers rounds, so its error against the fp32 golden is of the size of
// diffusers' own bf16 error (2x is the margin for kernels that sum in another order). The tiny
// model's 3-channel RMS norms make that error large (~0.2 max, ~0.05 mean).
void expect_bf16_like_diffusers(at::Device device) {
  const Golden g = golden();
  const WanVae vae = WanVae::load(kTiny, device, at::kBFloat16);
  const at::Tensor out = vae.decode_float(g.latents);
  ASSERT_EQ(out.scalar_type(), at::kBFloat16);
  ASSERT_EQ(out.sizes(), g.decoded.sizes());
  const double err = relative_error(out, g.decoded), mean = mean_error(out, g.decoded);
  std::cout << "bf16 on " << device << " vs diffusers fp32: max relative error " << err << ", mean " << mean
            << " (diffusers' bf16 run: " << g.bf16_relative_error << ", " << g.bf16_mean_error << ")\n";
  EXPECT_LE(err, 2 * g.bf16_relative_error);
  EXPECT_LE(mean, 2 * g.bf16_mean_error);
  const at::Tensor frames = vae.decode(g.latents, 2);
  EXPECT_EQ(frames.sizes(), g.frames.sizes());
  EXPECT_TRUE(frames.device().is_cpu());
}

TEST(WanVae, Bf16OnCpuErrsLikeDiffusersBf16) { expect_bf16_like_diffusers(at::kCPU); }

TEST(WanVaeCuda, Bf16ErrsLikeDiffusersBf16) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_bf16_like_diffusers(at::Device(at::kCUDA, 0));
}

TEST(WanVae, RandomWeightsFollowTheSeed) {
  const WanVaeConfig c = load_wan_vae_config(kTiny + "/config.json");
  const Golden g = golden();
  const at::Tensor a = WanVae::random(c, 7, at::kCPU, at::kFloat).decode_float(g.latents);
  const at::Tensor b = WanVae::random(c, 7, at::kCPU, at::kFloat).decode_float(g.latents);
  const at::Tensor d = WanVae::random(c, 8, at::kCPU, at::kFloat).decode_float(g.latents);
  EXPECT_EQ(a.sizes(), g.decoded.sizes());
  EXPECT_TRUE(at::isfinite(a).all().item<bool>());
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, d));
}

// The full-size Wan2.1 layout (what bench/vae_decode times on the GPU) builds and decodes.
TEST(WanVae, Wan21ConfigDecodesOnRandomWeights) {
  const WanVae vae = WanVae::random(WanVaeConfig(), 1, at::kCPU, at::kFloat);
  const at::Tensor frames = vae.decode(at::randn({1, 16, 2, 2, 3}), 1);
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{5, 16, 24, 3}));
}

TEST(WanVaeConfig, ReadsTheTinyConfigAndKnowsWan21) {
  const WanVaeConfig c = load_wan_vae_config(kTiny + "/config.json");
  EXPECT_EQ(c.base_dim, 3);
  EXPECT_EQ(c.decoder_dim(), 3);
  EXPECT_EQ(c.z_dim, 16);
  EXPECT_EQ(c.dim_mult, (std::vector<int64_t>{1, 2, 2, 2}));
  EXPECT_EQ(c.num_res_blocks, 1);
  EXPECT_EQ(c.temperal_downsample, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(c.latents_std.size(), 16u);
  EXPECT_DOUBLE_EQ(c.latents_mean[0], -0.7571);
  EXPECT_EQ(c.spatial_factor(), 8);
  EXPECT_EQ(c.temporal_factor(), 4);
  const WanVaeConfig wan;  // the defaults are Wan2.1's VAE
  EXPECT_EQ(wan.base_dim, 96);
  EXPECT_EQ(wan.dim_mult, (std::vector<int64_t>{1, 2, 4, 4}));
  EXPECT_NO_THROW(validate_wan_vae_config(wan, "Wan2.1"));
}

// Each test copies the tiny model into a fresh folder of its own and breaks one thing.
class WanVaeBadInput : public testing_support::TinyModelCopy {
 protected:
  WanVaeBadInput() : TinyModelCopy(kTiny, "diffusion_pytorch_model.safetensors") {}

  void load() const {
    write();
    WanVae::load(dir_.string(), at::kCPU, at::kFloat);
  }
};

TEST_F(WanVaeBadInput, MissingWeightFileOrConfig) {
  expect_missing_files_named([](const std::string& dir) { WanVae::load(dir, at::kCPU, at::kFloat); });
}

TEST_F(WanVaeBadInput, MissingTensor) {
  tensors_.erase("decoder.up_blocks.1.upsamplers.0.time_conv.bias");
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(); },
                                              {"no tensor 'decoder.up_blocks.1.upsamplers.0.time_conv.bias'"}));
}

// The encoder is not read, so a checkpoint without it (a decode-only export) loads.
TEST_F(WanVaeBadInput, EncoderTensorsAreNotNeeded) {
  for (auto it = tensors_.begin(); it != tensors_.end();)
    it = it->first.rfind("encoder.", 0) == 0 || it->first.rfind("quant_conv.", 0) == 0 ? tensors_.erase(it) : ++it;
  EXPECT_NO_THROW(load());
}

TEST_F(WanVaeBadInput, TensorWithWrongShape) {
  tensors_["decoder.mid_block.attentions.0.to_qkv.weight"] = at::zeros({18, 6, 3, 3});
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"'decoder.mid_block.attentions.0.to_qkv.weight'",
                        "has shape [18, 6, 3, 3], expected [18, 6, 1, 1]", "dim_mult [1, 2, 2, 2]"}));
}

TEST_F(WanVaeBadInput, TensorWithWrongDtype) {
  tensors_["decoder.norm_out.gamma"] = at::ones({3, 1, 1, 1}, at::kInt);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(); },
                                              {"'decoder.norm_out.gamma'", "dtype Int", "expected a floating type"}));
}

TEST_F(WanVaeBadInput, DecoderTensorsTheConfigDoesNotAccountFor) {
  config_["num_res_blocks"] = 0;
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"decoder tensors that the config does not account for", ".resnets.1.", "num_res_blocks 0"}));
}

TEST_F(WanVaeBadInput, ConfigValuesOutOfRange) {
  auto expect_field_error = [&](const char* field, nlohmann::json value, const std::string& problem) {
    nlohmann::json saved = config_;
    config_[field] = value;
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(); },
                                                {config_path(), "field '" + std::string(field) + "'", problem}))
        << field;
    config_ = saved;
  };
  expect_field_error("base_dim", 1, "must be >= 2, got 1");
  expect_field_error("decoder_base_dim", 0, "must be null or >= 2");
  expect_field_error("z_dim", 0, "must be >= 1");
  expect_field_error("dim_mult", nlohmann::json::array(), "must hold 1 to 8 multipliers");
  expect_field_error("dim_mult", nlohmann::json::array({1, 0, 2, 2}), "integers >= 1");
  expect_field_error("dim_mult", "1,2,2,2", "must be a list of integers");
  expect_field_error("num_res_blocks", -1, "must be >= 0");
  expect_field_error("temperal_downsample", nlohmann::json::array({false, true}), "len(dim_mult) - 1 = 3, got 2");
  expect_field_error("temperal_downsample", nlohmann::json::array({0, 1, 1}), "true/false flags");
  expect_field_error("latents_mean", nlohmann::json::array({0.0, 1.0}), "must hold z_dim = 16 numbers, got 2");
  nlohmann::json bad_std = config_["latents_std"];
  bad_std[3] = 0.0;
  expect_field_error("latents_std", bad_std, "finite numbers > 0");
  expect_field_error("attn_scales", nlohmann::json::array({"x"}), "must be a list of numbers");
  expect_field_error("is_residual", true, "Wan2.2's VAE is not supported");
  expect_field_error("patch_size", 2, "must be null");
  expect_field_error("out_channels", 12, "must be 3 (RGB frames)");
  expect_field_error("scale_factor_temporal", 8, "dim_mult and temperal_downsample give 4");
  expect_field_error("_class_name", "WanTransformer3DModel", "not \"AutoencoderKLWan\"");
}

TEST_F(WanVaeBadInput, ConfigNotJson) {
  std::ofstream(config_path()) << "{\"z_dim\": 16,";
  EXPECT_TRUE(
      throws_with<std::runtime_error>([&] { load_wan_vae_config(config_path()); }, {config_path(), "not valid JSON"}));
}

TEST(WanVaeBadDecode, LatentsOfTheWrongShapeOrChunk) {
  const WanVae vae = WanVae::load(kTiny, at::kCPU, at::kFloat);
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vae.decode_float(at::zeros({1, 4, 3, 6, 5}));
      },
      {"latents must be [B, 16, F, H, W]", "z_dim 16", "[1, 4, 3, 6, 5]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vae.decode(at::zeros({16, 3, 6, 5}));
      },
      {"WanVae::decode", "latents must be [B, 16, F, H, W]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vae.decode_float(at::zeros({1, 16, 0, 6, 5}));
      },
      {"F, H, W >= 1"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vae.decode(at::zeros({2, 16, 3, 6, 5}));
      },
      {"takes one video", "[2, 16, 3, 6, 5]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vae.decode(at::zeros({1, 16, 3, 6, 5}), 0);
      },
      {"chunk must be >= 1", "got 0"}));
}

}  // namespace
}  // namespace ditkit
