// Helpers the model tests share: error measures against goldens, "throws with these words", a
// fixture that copies a tiny model folder so a test can break one thing in its own copy, and a
// tiny random shipped model for pipeline tests.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "pipelines/shipped_model.h"

namespace ditkit::testing_support {

// max|a - b| / max|b|, in fp64 on the CPU.
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return (x - y).abs().max().item<double>() / y.abs().max().item<double>();
}

// Passes when `f` throws an E whose message holds every one of `words`.
template <typename E>
::testing::AssertionResult throws_with(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
  } catch (const E& e) {
    const std::string message = e.what();
    for (const std::string& w : words)
      if (message.find(w) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << message << "\" lacks \"" << w << "\"";
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "nothing of the expected type was thrown";
}

// Copies a tiny model's config.json and weights into a fresh folder per test; write() puts
// config_ and tensors_ (as the test changed them) back on disk for the loader under test.
class TinyModelCopy : public ::testing::Test {
 protected:
  TinyModelCopy(std::string source, std::string weights_file)
      : source_(std::move(source)), weights_file_(std::move(weights_file)) {}

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("ditkit-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + "-" + std::to_string(::getpid()));
    remove_tree(dir_.string());
    std::filesystem::create_directories(dir_);
    std::ifstream in(source_ + "/config.json");
    config_ = nlohmann::json::parse(in);
    SafetensorsFile weights(source_ + "/" + weights_file_);
    for (const std::string& key : weights.keys()) tensors_[key] = weights.get(key);
  }
  void TearDown() override { remove_tree(dir_.string()); }

  void write() const {
    std::ofstream(dir_ / "config.json") << config_.dump(2);
    save_safetensors((dir_ / weights_file_).string(), tensors_);
  }
  std::string config_path() const { return (dir_ / "config.json").string(); }

  // `load` on a folder with a config but no weights, then with weights but no config: each error
  // names the folder or the file and what is missing.
  void expect_missing_files_named(const std::function<void(const std::string& dir)>& load) const {
    std::ofstream(dir_ / "config.json") << config_.dump(2);
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(dir_.string()); }, {dir_.string(), "no .safetensors file"}));
    std::filesystem::remove(dir_ / "config.json");
    save_safetensors((dir_ / weights_file_).string(), tensors_);
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(dir_.string()); }, {config_path(), "cannot open"}));
  }

  std::string source_, weights_file_;
  std::filesystem::path dir_;
  nlohmann::json config_;
  std::map<std::string, at::Tensor> tensors_;
};

// A tiny random shipped model: caption words, transformer, defaults (16x16, 8 frames, 2 Euler
// steps), and the folder save_shipped_model writes from them.
inline const std::vector<std::string> kWords = {"a",    "red", "green", "circle", "square", "moves",
                                                "left", "up",  "on",    "blue",   "gray",   "background"};

inline WanConfig tiny_transformer_config() {
  WanConfig c;
  c.num_attention_heads = 2;
  c.attention_head_dim = 12;
  c.in_channels = c.out_channels = 192;  // the 4x4x4 codec's channels
  c.text_dim = 16;
  c.freq_dim = 16;
  c.ffn_dim = 32;
  c.num_layers = 2;
  return c;
}

inline ShippedModelIndex tiny_index() {
  ShippedModelIndex index;
  index.defaults.width = 16;
  index.defaults.height = 16;
  index.defaults.frames = 8;
  index.defaults.steps = 2;
  index.defaults.guidance = 3.0;
  index.defaults.shift = 2.0;
  index.defaults.scheduler = "euler";
  return index;
}

// `words`: the caption encoder's vocabulary (caption_vocabulary() for prompts that are captions,
// with a `max_length` that holds them).
inline void write_tiny_shipped_model(const std::string& dir, const ShippedModelIndex& index = tiny_index(),
                                     const std::vector<std::string>& words = kWords, int64_t max_length = 10) {
  CaptionEncoderConfig captions;
  captions.dim = 16;
  captions.layers = 1;
  captions.heads = 2;
  captions.ffn = 32;
  captions.max_length = max_length;
  save_shipped_model(dir, WanTransformer::random(tiny_transformer_config(), 3, at::kCPU, at::kFloat),
                     CaptionEncoder::random(captions, CaptionVocabulary(words), 4, at::kCPU, at::kFloat), index);
}

}  // namespace ditkit::testing_support
