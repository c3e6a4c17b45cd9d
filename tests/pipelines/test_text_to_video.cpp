// Text to video end to end on a tiny Wan2.1 diffusers folder (tests/golden/wan_pipeline.py):
// the same prompt, seed and settings as diffusers' WanPipeline give the same text context,
// latents and frames.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include <map>

#include "ditkit_config.h"
#include "dit/safetensors.h"
#include "pipelines/text_to_video.h"
#include "tests/model_test_support.h"

namespace ditkit {
namespace {

const std::string kDir = std::string(DITKIT_TEST_DATA) + "/wan_pipeline_tiny";

using testing_support::relative_error;

struct Reference {
  SafetensorsFile file{kDir + "/reference.safetensors"};
  const std::map<std::string, std::string>& meta = file.metadata();
};

// The settings diffusers ran with, from the reference's metadata.
TextToVideoOptions options_of(const std::map<std::string, std::string>& m) {
  TextToVideoOptions o;
  o.prompt = m.at("prompt");
  o.negative_prompt = m.at("negative_prompt");
  o.width = std::stoll(m.at("width"));
  o.height = std::stoll(m.at("height"));
  o.frames = std::stoll(m.at("num_frames"));
  o.max_sequence_length = std::stoll(m.at("max_sequence_length"));
  o.sampling.steps = std::stoi(m.at("num_inference_steps"));
  o.sampling.guidance = std::stod(m.at("guidance_scale"));
  o.sampling.shift = std::stod(m.at("flow_shift"));
  o.sampling.seed = std::stoll(m.at("seed"));
  return o;
}

TEST(TextToVideo, MatchesDiffusersWanPipeline) {
  if (!DITKIT_HAVE_SENTENCEPIECE) GTEST_SKIP() << "built without sentencepiece";
  Reference ref;
  TextToVideoOptions o = options_of(ref.meta);
  TextToVideo pipeline = TextToVideo::load(kDir, at::kCPU, at::kFloat);

  at::Tensor texts = pipeline.encode_texts({o.prompt, o.negative_prompt}, o.max_sequence_length);
  at::Tensor context = texts.narrow(0, 0, 1), uncond = texts.narrow(0, 1, 1);
  EXPECT_LE(relative_error(context, ref.file.get("prompt_embeds")), 1e-4);
  EXPECT_LE(relative_error(uncond, ref.file.get("negative_prompt_embeds")), 1e-4);

  at::Tensor initial = ref.file.get("initial_latents");
  EXPECT_TRUE(at::equal(seeded_noise(initial.sizes(), o.sampling.seed, at::kCPU, at::kFloat), initial));
  at::Tensor latents =
      sample(pipeline.transformer(), initial.sizes().vec(), context, uncond, o.sampling, nullptr, {});
  const double latent_err = relative_error(latents, ref.file.get("final_latents"));
  std::cout << "final latents vs diffusers: max relative error " << latent_err << "\n";
  EXPECT_LE(latent_err, 1e-4);

  at::Tensor frames = pipeline.generate(o);
  at::Tensor want = ref.file.get("video_uint8");
  ASSERT_EQ(frames.sizes(), want.sizes());
  // Batching cond and uncond sums in another order than diffusers' two passes: a pixel may land
  // one level away where its value sits on a rounding boundary.
  at::Tensor diff = (frames.to(at::kInt) - want.to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_LE(diff.gt(0).to(at::kDouble).mean().item<double>(), 1e-3);
  EXPECT_GT(pipeline.timings().denoise, 0.0);  // measured, not left at its default
}

TEST(TextToVideo, SizesTheModelCannotTakeSayWhatItCan) {
  if (!DITKIT_HAVE_SENTENCEPIECE) GTEST_SKIP() << "built without sentencepiece";
  Reference ref;
  TextToVideo pipeline = TextToVideo::load(kDir, at::kCPU, at::kFloat);
  TextToVideoOptions o = options_of(ref.meta);
  o.width = 50;
  try {
    pipeline.generate(o);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of 16"), std::string::npos) << e.what();
  }
  o = options_of(ref.meta);
  o.frames = 10;
  try {
    pipeline.generate(o);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("1 + 4k"), std::string::npos) << e.what();
  }
}

TEST(TextToVideo, OutOfGpuMemorySaysWhereWithTheNumbersAndWhatToLower) {
  if (!DITKIT_HAVE_SENTENCEPIECE) GTEST_SKIP() << "built without sentencepiece";
  Reference ref;
  TextToVideo pipeline = TextToVideo::load(kDir, at::kCPU, at::kFloat);
  const TextToVideoOptions o = options_of(ref.meta);
  // The allocator's own error, raised where a denoising step would run out.
  const auto exhausted = [](int, int) -> bool {
    throw c10::OutOfMemoryError({__func__, __FILE__, uint32_t(__LINE__)},
                                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                "79.19 GiB of which 1.06 GiB is free.\nmore detail");
  };
  try {
    pipeline.generate(o, nullptr, exhausted);
    FAIL() << "expected an error";
  } catch (const OutOfGpuMemory& e) {
    const std::string m = e.what();
    const std::string size = std::to_string(o.width) + "x" + std::to_string(o.height);
    for (const std::string& word : std::vector<std::string>{"during denoising", size, "Tried to allocate 2.00 GiB",
                                                            "1.06 GiB is free", "lower the frames, width or height",
                                                            "sparse attention"})
      EXPECT_NE(m.find(word), std::string::npos) << "\"" << word << "\" not in: " << m;
    EXPECT_EQ(m.find("more detail"), std::string::npos) << m;
  }
}

TEST(TextToVideo, MissingFolderIsAClearError) {
  try {
    TextToVideo::load(kDir + "/nope", at::kCPU, at::kFloat);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ditkit
