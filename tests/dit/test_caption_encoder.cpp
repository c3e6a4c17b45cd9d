// The shipped model's caption encoder: word tokenizer (round trip, unknown words, long prompts),
// encoder shapes, padding (masked as keys, zero in the output), gradients, and save/load.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dit/atomic_file.h"
#include "dit/caption_encoder.h"
#include "dit/safetensors.h"
#include "tests/model_test_support.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::throws_with;

const std::vector<std::string> kWords = {"a",  "red", "green", "circle", "square", "moves",   "left",
                                         "up", "on",  "blue",  "and",    "gray",   "striped", "background"};

CaptionEncoderConfig tiny_config() {
  CaptionEncoderConfig c;
  c.dim = 16;
  c.layers = 2;
  c.heads = 2;
  c.ffn = 32;
  c.max_length = 12;
  return c;
}

CaptionEncoder tiny_encoder(uint64_t seed = 1) {
  return CaptionEncoder::random(tiny_config(), CaptionVocabulary(kWords), seed, at::kCPU, at::kFloat);
}

class CaptionEncoderFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ditkit-caption-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
            std::to_string(::getpid()));
    remove_tree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_.string()); }
  std::string path(const char* name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST(CaptionVocabulary, TokenizesWordsAndPadsWithZero) {
  const CaptionVocabulary vocabulary(kWords);
  EXPECT_EQ(vocabulary.size(), int64_t(kWords.size()) + 1);
  const CaptionTokens t = vocabulary.tokenize({"A red circle, moves LEFT.", "", "  green\tsquare  "}, 8);
  ASSERT_EQ(t.ids.sizes(), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(t.lengths, (std::vector<int64_t>{5, 0, 2}));
  // Round trip: ids back to words give the prompt lower-cased, without punctuation.
  std::vector<std::string> words;
  for (int64_t i = 0; i < t.lengths[0]; ++i)
    words.push_back(vocabulary.words()[size_t(t.ids[0][i].item<int64_t>() - 1)]);
  EXPECT_EQ(words, (std::vector<std::string>{"a", "red", "circle", "moves", "left"}));
  EXPECT_EQ(t.ids[0].slice(0, 5).sum().item<int64_t>(), 0);
  EXPECT_EQ(t.ids[1].abs().sum().item<int64_t>(), 0);
  EXPECT_EQ(t.ids[2][0].item<int64_t>(), 3);  // "green" is the third word
}

TEST_F(CaptionEncoderFolder, UnknownWordsAndLongPromptsAreClearErrors) {
  CaptionVocabulary(kWords).save(path("vocab.txt"));
  const CaptionVocabulary vocabulary = CaptionVocabulary::load(path("vocab.txt"));
  EXPECT_EQ(vocabulary.words(), kWords);
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        vocabulary.tokenize({"a red circle", "a purple circle"}, 8);
      },
      {"\"purple\"", "knows only the 14 words", path("vocab.txt"), "red, green"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { vocabulary.tokenize({"a red circle moves left"}, 4); },
                                                 {"5 words", "at most 4"}));
}

TEST_F(CaptionEncoderFolder, BrokenVocabularyFilesNameTheFileAndWord) {
  std::ofstream(path("vocab.txt")) << "a\nred\nRed\n";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionVocabulary::load(path("vocab.txt")); },
                                              {path("vocab.txt"), "word 3", "\"Red\"", "lower-case"}));
  std::ofstream(path("vocab.txt")) << "a\nred\na\n";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionVocabulary::load(path("vocab.txt")); },
                                              {"word 3", "appears twice"}));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionVocabulary::load(path("nope.txt")); },
                                              {path("nope.txt"), "cannot open"}));
}

TEST(CaptionEncoder, ShapesAndZeroPadding) {
  const CaptionEncoder encoder = tiny_encoder();
  const CaptionTokens t = encoder.tokenize({"a red circle moves left on a blue background", "", "a green square"});
  const at::Tensor out = encoder.encode(t.ids);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 12, 16}));
  EXPECT_TRUE(at::isfinite(out).all().item<bool>());
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t n = t.lengths[size_t(i)];
    EXPECT_EQ(out[i].slice(0, n).abs().sum().item<double>(), 0.0) << "prompt " << i;
    if (n > 0) {
      EXPECT_GT(out[i].narrow(0, 0, n).abs().min().item<double>(), 0.0) << "prompt " << i;
    }
  }
}

// Padding is masked as keys: the words' outputs do not change with the number of pad tokens.
TEST(CaptionEncoder, PaddingIsNotAttendedTo) {
  const CaptionEncoder encoder = tiny_encoder();
  const at::Tensor ids = encoder.tokenize({"a red circle moves up"}).ids;
  const at::Tensor full = encoder.encode(ids), short_ = encoder.encode(ids.narrow(1, 0, 5));
  EXPECT_TRUE(at::allclose(full.narrow(1, 0, 5), short_, 1e-5, 1e-6));
  // Different words give different contexts (the embedding is not degenerate).
  EXPECT_FALSE(at::allclose(encoder.encode(encoder.tokenize({"a red circle moves left"}).ids), full, 1e-3, 1e-4));
}

TEST(CaptionEncoder, GradientsReachEveryParameter) {
  const CaptionEncoder encoder = tiny_encoder();
  const auto parameters = encoder.named_parameters();
  EXPECT_EQ(parameters.size(), size_t(2 + 2 * 15 + 2));  // embeddings, 15 per layer (no key bias), final norm
  for (const auto& [name, p] : parameters) p.requires_grad_(true);
  encoder.encode(encoder.tokenize({"a red circle moves left", "a green square"}).ids).pow(2).sum().backward();
  for (const auto& [name, p] : parameters) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0) << name;
  }
  // Updating a parameter in place changes what encode() computes: they are the model's tensors.
  const at::Tensor ids = encoder.tokenize({"a red circle"}).ids;
  const at::Tensor before = encoder.encode(ids).detach();
  parameters.front().second.detach().add_(1.0);  // as an optimizer step does, outside autograd
  EXPECT_FALSE(at::allclose(encoder.encode(ids).detach(), before));
}

TEST_F(CaptionEncoderFolder, SaveAndLoadGiveTheSameOutputs) {
  const CaptionEncoder encoder = tiny_encoder(7);
  const at::Tensor ids = encoder.tokenize({"a red circle moves left", "a green square moves up", ""}).ids;
  encoder.save(dir_.string(), at::kFloat);
  const CaptionEncoder loaded = CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat);
  EXPECT_EQ(loaded.vocabulary().words(), kWords);
  EXPECT_EQ(loaded.config().max_length, 12);
  EXPECT_TRUE(at::equal(loaded.encode(ids), encoder.encode(ids)));

  // bf16 storage loads into an fp32 run, close to the fp32 model.
  encoder.save(dir_.string(), at::kBFloat16);
  EXPECT_EQ(SafetensorsFile(path("model.safetensors")).get("final_norm.weight").scalar_type(), at::kBFloat16);
  const CaptionEncoder from_bf16 = CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat);
  EXPECT_EQ(from_bf16.dtype(), at::kFloat);
  EXPECT_TRUE(at::allclose(from_bf16.encode(ids), encoder.encode(ids), 0.05, 0.05));
}

// Without token mixing a word's vector depends on the word and its position only; the same
// weights with mixing let a changed neighbour move it (the control). The setting survives a save.
TEST_F(CaptionEncoderFolder, WithoutTokenMixingAWordIgnoresItsNeighbours) {
  CaptionEncoderConfig config = tiny_config();
  const CaptionEncoder mixing = CaptionEncoder::random(config, CaptionVocabulary(kWords), 3, at::kCPU, at::kFloat);
  config.token_mixing = false;
  const CaptionEncoder alone = CaptionEncoder::random(config, CaptionVocabulary(kWords), 3, at::kCPU, at::kFloat);
  const at::Tensor ids = alone.tokenize({"a red circle moves left", "a red square moves left", "a red"}).ids;
  const at::Tensor out = alone.encode(ids), mixed = mixing.encode(ids);
  for (int64_t position : {0, 1, 3, 4})
    EXPECT_TRUE(at::equal(out[0][position], out[1][position])) << "position " << position;
  EXPECT_FALSE(at::allclose(out[0][2], out[1][2], 1e-3, 1e-4)) << "the changed word itself";
  EXPECT_TRUE(at::equal(out[2].narrow(0, 0, 2), out[0].narrow(0, 0, 2))) << "a shorter prompt";
  EXPECT_FALSE(at::allclose(mixed[0][1], mixed[1][1], 1e-3, 1e-4)) << "with mixing, 'red' sees the shape";

  alone.save(dir_.string(), at::kFloat);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(path("config.json")))["token_mixing"], false);
  const CaptionEncoder loaded = CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat);
  EXPECT_FALSE(loaded.config().token_mixing);
  EXPECT_TRUE(at::equal(loaded.encode(ids), out));

  nlohmann::json bad = nlohmann::json::parse(std::ifstream(path("config.json")));
  bad["token_mixing"] = "no";
  std::ofstream(path("config.json")) << bad.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat); },
                                              {path("config.json"), "token_mixing"}));
}

TEST_F(CaptionEncoderFolder, LoadErrorsNameTheFileAndTensor) {
  const CaptionEncoder encoder = tiny_encoder();
  encoder.save(dir_.string(), at::kFloat);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : encoder.named_parameters()) tensors[name] = t;

  tensors["layers.1.ffn.fc1.weight"] = at::zeros({31, 16});
  save_safetensors(path("model.safetensors"), tensors);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat); },
                                              {path("model.safetensors"), "layers.1.ffn.fc1.weight", "[31, 16]"}));
  tensors.erase("layers.1.ffn.fc1.weight");
  save_safetensors(path("model.safetensors"), tensors);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat); },
                                              {"no tensor 'layers.1.ffn.fc1.weight'"}));

  std::ofstream(path("vocab.txt")) << "a\nred\n";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat); },
                                              {path("config.json"), "vocab_size", "2 words"}));
  nlohmann::json config = nlohmann::json::parse(std::ifstream(path("config.json")));
  config["dim"] = 15;
  std::ofstream(path("config.json")) << config.dump();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { CaptionEncoder::load(dir_.string(), at::kCPU, at::kFloat); },
                                              {path("config.json"), "'dim'", "multiple of heads"}));
}

TEST(CaptionEncoder, BadIdsAreErrors) {
  const CaptionEncoder encoder = tiny_encoder();
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        encoder.encode(at::zeros({1, 13}, at::kLong));
      },
      {"max_length 12", "[1, 13]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        encoder.encode(at::full({1, 3}, 15, at::kLong));
      },
      {"15", "outside the vocabulary [0, 15)"}));
}

}  // namespace
}  // namespace ditkit
