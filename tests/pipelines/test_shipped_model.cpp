// The shipped model's folder: written from random parts, read back by TextToVideo::load, and
// generating frames end to end on the CPU; the errors a broken folder or a wrong size gets.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "ditkit_config.h"
#include "pipelines/shipped_model.h"
#include "pipelines/adherence_eval.h"
#include "pipelines/text_to_video.h"
#include "tests/model_test_support.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::throws_with;

using testing_support::kWords;
using testing_support::tiny_index;
using testing_support::tiny_transformer_config;

class ShippedModel : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("ditkit-shipped-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(::getpid()));
    remove_tree(root_.string());
    fs::create_directories(root_);
    dir_ = (root_ / "default-model").string();
  }
  void TearDown() override { remove_tree(root_.string()); }

  void write(const ShippedModelIndex& index = tiny_index()) const {
    testing_support::write_tiny_shipped_model(dir_, index);
  }

  fs::path root_;
  std::string dir_;
};

TEST_F(ShippedModel, GeneratesFramesEndToEndOnTheCpu) {
  write();
  EXPECT_TRUE(is_shipped_model_folder(dir_));
  EXPECT_EQ(read_shipped_model_index(dir_).prediction, "velocity");
  // bf16 weights by default, loaded into an fp32 run.
  EXPECT_EQ(
      SafetensorsFile(dir_ + "/transformer/diffusion_pytorch_model.safetensors").get("proj_out.weight").scalar_type(),
      at::kBFloat16);
  EXPECT_EQ(SafetensorsFile(dir_ + "/caption_encoder/model.safetensors").get("final_norm.weight").scalar_type(),
            at::kBFloat16);

  TextToVideo pipeline = TextToVideo::load(dir_, at::kCPU, at::kFloat);
  const ModelDefaults& d = pipeline.defaults();
  EXPECT_EQ(d.width, 16);
  EXPECT_EQ(d.frames, 8);
  EXPECT_EQ(d.steps, 2);
  EXPECT_EQ(d.scheduler, "euler");
  EXPECT_EQ(d.max_sequence_length, 10);  // the caption encoder's max_length
  EXPECT_EQ(pipeline.transformer().dtype(), at::kFloat);

  TextToVideoOptions o = pipeline.default_options();
  EXPECT_EQ(o.sampling.shift, 2.0);
  o.prompt = "A red circle moves left on a blue background.";
  const at::Tensor frames = pipeline.generate(o);
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{8, 16, 16, 3}));
  EXPECT_EQ(frames.scalar_type(), at::kByte);
  EXPECT_GT(pipeline.timings().denoise, 0.0);
  // Same seed, same frames; max_sequence_length 0 and the model's own are the same.
  o.max_sequence_length = 10;
  EXPECT_TRUE(at::equal(pipeline.generate(o), frames));

  EXPECT_EQ(pipeline.encode_texts({"a green square", ""}, 0).sizes(), (std::vector<int64_t>{2, 10, 16}));
  EXPECT_EQ(pipeline.encode_texts({""}, 0).abs().sum().item<double>(), 0.0);
}

// The adherence tests' model (random weights) and settings: three held-out prompts from seed 5.
TextToVideo random_shapes_model(const std::string& dir) {
  testing_support::write_tiny_shipped_model(dir, tiny_index(), caption_vocabulary(), 32);
  return TextToVideo::load(dir, at::kCPU, at::kFloat);
}

AdherenceOptions three_prompts(const TextToVideo& pipeline) {
  AdherenceOptions o;
  o.count = 3;
  o.seed = 5;
  o.generation = pipeline.default_options();
  return o;
}

// The adherence run's videos on a random model, generated without looking (no OpenCV needed):
// which prompts it draws, with which noise seeds, and that it stops when asked.
TEST_F(ShippedModel, AdherenceVideosAreTheSplitsPrompts) {
  TextToVideo pipeline = random_shapes_model(dir_);
  AdherenceOptions o = three_prompts(pipeline);
  int calls = 0;
  generate_adherence_videos(pipeline, o, nullptr,
                            [&](int64_t i, int64_t n, const AdherencePrompt& p, const at::Tensor& frames) {
                              EXPECT_EQ(i, calls++);
                              EXPECT_EQ(n, 3);
                              EXPECT_EQ(p.seed, 5 + uint64_t(i));
                              EXPECT_EQ(p.prompt, caption(sample_facts(p.seed, Split::kHeldOut)));
                              EXPECT_EQ(caption(p.facts), p.prompt);
                              EXPECT_TRUE(is_held_out(p.facts));
                              TextToVideoOptions same = o.generation;
                              same.prompt = p.prompt;
                              same.sampling.seed = int64_t(p.seed);
                              EXPECT_TRUE(at::equal(frames, pipeline.generate(same)));
                              return true;
                            });
  EXPECT_EQ(calls, 3);

  o.split = Split::kTrain;
  calls = 0;
  generate_adherence_videos(pipeline, o, nullptr, [&](int64_t i, int64_t, const AdherencePrompt& p, const at::Tensor&) {
    ++calls;
    EXPECT_FALSE(is_held_out(p.facts));
    return i < 1;
  });
  EXPECT_EQ(calls, 2);

  o.count = 0;
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { generate_adherence_videos(pipeline, o, nullptr, {}); }, {"count", ">= 1"}));
}

#if DITKIT_HAVE_OPENCV
// measure_adherence on a random model: those videos, each checked, the right ones counted, and a
// stop when asked. (A random model draws nothing right; the checker's own proof is elsewhere.)
TEST_F(ShippedModel, AdherenceCountsTheRightOnes) {
  TextToVideo pipeline = random_shapes_model(dir_);
  AdherenceOptions o = three_prompts(pipeline);
  int calls = 0;
  const AdherenceResult all =
      measure_adherence(pipeline, o, nullptr, [&](int64_t i, int64_t n, const PromptResult& p, const at::Tensor& f) {
        EXPECT_EQ(i, calls++);
        EXPECT_EQ(n, 3);
        EXPECT_EQ(f.sizes(), (std::vector<int64_t>{8, 16, 16, 3}));
        EXPECT_EQ(p.seed, 5 + uint64_t(i));
        EXPECT_EQ(p.report.wrong, check_clip(f, parse_caption(p.prompt)).wrong);
        return true;
      });
  ASSERT_EQ(all.prompts.size(), 3u);
  int64_t right = 0;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(all.prompts[i].prompt, caption(sample_facts(5 + i, Split::kHeldOut)));
    right += all.prompts[i].report.all_right ? 1 : 0;
  }
  EXPECT_EQ(all.right, right);
  EXPECT_DOUBLE_EQ(all.share(), double(right) / 3.0);

  const AdherenceResult stopped = measure_adherence(
      pipeline, o, nullptr, [](int64_t i, int64_t, const PromptResult&, const at::Tensor&) { return i < 1; });
  EXPECT_EQ(stopped.prompts.size(), 2u);
}
#endif

TEST_F(ShippedModel, WrongSizesAndWordsSayWhatTheModelTakes) {
  write();
  TextToVideo pipeline = TextToVideo::load(dir_, at::kCPU, at::kFloat);
  TextToVideoOptions o = pipeline.default_options();
  o.prompt = "a red circle";
  o.frames = 9;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { pipeline.generate(o); }, {"frames 9", "multiples of 4"}));
  o = pipeline.default_options();
  o.prompt = "a red circle";
  o.width = 20;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { pipeline.generate(o); }, {"width 20", "multiples of 8"}));
  o = pipeline.default_options();
  o.prompt = "a purple circle";
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { pipeline.generate(o); },
                                                 {"\"purple\"", dir_ + "/caption_encoder/vocab.txt"}));
  o.prompt = "a red circle";
  o.max_sequence_length = 512;
  EXPECT_TRUE(
      throws_with<std::invalid_argument>([&] { pipeline.generate(o); }, {"max_sequence_length 512", "10 tokens"}));
}

TEST_F(ShippedModel, SavingReplacesOnlyAShippedModelFolder) {
  write();
  ShippedModelIndex index = tiny_index();
  index.defaults.steps = 7;
  write(index);  // replaces the first
  EXPECT_EQ(read_shipped_model_index(dir_).defaults.steps, 7);
  for (const fs::directory_entry& e : fs::directory_iterator(root_))
    EXPECT_EQ(e.path().filename(), "default-model") << "left behind: " << e.path();

  const std::string other = (root_ / "other").string();
  fs::create_directories(other);
  std::ofstream(other + "/keep.txt") << "mine";
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] {
        save_shipped_model(other, WanTransformer::random(tiny_transformer_config(), 3, at::kCPU, at::kFloat),
                           CaptionEncoder::load(dir_ + "/caption_encoder", at::kCPU, at::kFloat), tiny_index());
      },
      {other, "not a shipped model folder"}));
  EXPECT_TRUE(fs::exists(other + "/keep.txt"));

  index.defaults.frames = 6;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { write(index); }, {"frames 6", "multiples of 4"}));
}

TEST_F(ShippedModel, BrokenIndexNamesTheFileAndField) {
  write();
  const std::string path = dir_ + "/model_index.json";
  nlohmann::json index = nlohmann::json::parse(std::ifstream(path));
  index["defaults"].erase("steps");
  std::ofstream(path) << index.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { TextToVideo::load(dir_, at::kCPU, at::kFloat); },
                                              {path, "'steps'", "missing"}));
  index["defaults"]["steps"] = 2;
  index["defaults"]["scheduler"] = "ddim";
  std::ofstream(path) << index.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { TextToVideo::load(dir_, at::kCPU, at::kFloat); },
                                              {path, "'scheduler'", "ddim"}));
  index["defaults"]["scheduler"] = "euler";
  index["prediction"] = "epsilon";
  std::ofstream(path) << index.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { TextToVideo::load(dir_, at::kCPU, at::kFloat); },
                                              {path, "'prediction'", "epsilon"}));
  index["prediction"] = "sample";
  index["codec"]["factor"] = {4, 8, 8};  // 768 channels: not what the transformer takes
  std::ofstream(path) << index.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { TextToVideo::load(dir_, at::kCPU, at::kFloat); },
                                              {"768 latent channels", "in_channels 192"}));
}

// An x0-predicting model: one Euler step from sigma 1 to 0 lands exactly on its prediction.
TEST(SamplePrediction, OneEulerStepLandsOnTheModelsX0) {
  const WanTransformer model = WanTransformer::random(tiny_transformer_config(), 5, at::kCPU, at::kFloat);
  SamplingOptions o;
  o.steps = 1;
  o.guidance = 1.0;
  o.scheduler = "euler";
  o.prediction = "sample";
  o.seed = 3;
  const std::vector<int64_t> shape{1, 192, 2, 4, 4};
  const at::Tensor context = at::randn({1, 10, 16});
  const at::Tensor x0 =
      model.forward(seeded_noise(shape, o.seed, at::kCPU, at::kFloat), at::full({1}, 1000.0), context);
  EXPECT_TRUE(at::allclose(sample(model, shape, context, {}, o), x0, 1e-5, 1e-5));
  o.prediction = "epsilon";
  EXPECT_THROW(sample(model, shape, context, {}, o), c10::Error);
}

TEST(WanFolder, DefaultsComeFromThePipelineAndItsScheduler) {
  if (!DITKIT_HAVE_SENTENCEPIECE) GTEST_SKIP() << "built without sentencepiece";
  const std::string dir = std::string(DITKIT_TEST_DATA) + "/wan_pipeline_tiny";
  EXPECT_FALSE(is_shipped_model_folder(dir));
  TextToVideo pipeline = TextToVideo::load(dir, at::kCPU, at::kFloat);
  EXPECT_EQ(pipeline.defaults().frames, 81);
  EXPECT_EQ(pipeline.defaults().shift, 3.0);  // scheduler_config.json's flow_shift
  EXPECT_EQ(pipeline.defaults().max_sequence_length, 512);
  EXPECT_EQ(pipeline.default_options().sampling.scheduler, "unipc");
}

}  // namespace
}  // namespace ditkit
