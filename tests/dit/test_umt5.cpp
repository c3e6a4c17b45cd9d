// The umT5 text encoder and the T5 tokenizer against transformers' golden run
// (tests/golden/umt5.py), the Wan pipeline's zeroing past each prompt's length, and the errors a
// bad checkpoint, config, tokenizer file or input gets.
//
// Relative error throughout: max|a - b| / max|b|, with b the transformers fp32 output.
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
#include "dit/umt5_encoder.h"
#include "ditkit_config.h"
#if DITKIT_HAVE_SENTENCEPIECE
#include "dit/tokenizer.h"
#endif

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::relative_error;
using testing_support::throws_with;

const std::string kTiny = std::string(DITKIT_TEST_DATA) + "/umt5_tiny";
const std::string kEncoderDir = kTiny + "/text_encoder";

struct Golden {
  std::vector<std::string> prompts;
  int64_t max_length;
  at::Tensor ids, mask, output, output_bf16;
};

Golden golden() {
  SafetensorsFile io(kTiny + "/io.safetensors");
  Golden g;
  g.prompts = nlohmann::json::parse(io.metadata().at("prompts")).get<std::vector<std::string>>();
  g.max_length = std::stoll(io.metadata().at("max_length"));
  g.ids = io.get("input_ids");
  g.mask = io.get("attention_mask");
  g.output = io.get("output");
  g.output_bf16 = io.get("output_bf16");
  return g;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#if DITKIT_HAVE_SENTENCEPIECE
const std::string kSpiece = kTiny + "/tokenizer/spiece.model";

TEST(Tokenizer, IdsEqualTransformersForEveryPrompt) {
  const Golden g = golden();
  const Tokenizer tokenizer(kTiny + "/tokenizer");  // the folder, as Wan's layout has it
  const TokenBatch batch = tokenizer.encode(g.prompts, g.max_length);
  ASSERT_EQ(batch.input_ids.sizes(), g.ids.sizes());
  for (size_t i = 0; i < g.prompts.size(); ++i) {
    EXPECT_TRUE(at::equal(batch.input_ids[int64_t(i)], g.ids[int64_t(i)]))
        << "prompt " << i << " \"" << g.prompts[i] << "\"\n ours " << batch.input_ids[int64_t(i)]
        << "\n transformers " << g.ids[int64_t(i)];
    EXPECT_TRUE(at::equal(batch.attention_mask[int64_t(i)], g.mask[int64_t(i)])) << "prompt " << i;
    EXPECT_EQ(batch.lengths[i], g.mask[int64_t(i)].sum().item<int64_t>()) << "prompt " << i;
  }
}

TEST(Tokenizer, EmptyPromptsAreJustEosAndLongOnesKeepEosLast) {
  const Tokenizer tokenizer(kSpiece);
  EXPECT_EQ(tokenizer.pad_id(), 0);
  EXPECT_EQ(tokenizer.eos_id(), 1);
  const TokenBatch batch = tokenizer.encode({"", " \t\n ", std::string(400, 'a') + " red circle"}, 16);
  EXPECT_EQ(batch.lengths, (std::vector<int64_t>{1, 1, 16}));
  EXPECT_EQ(batch.input_ids[0][0].item<int64_t>(), 1);
  EXPECT_EQ(batch.input_ids[0].slice(0, 1).sum().item<int64_t>(), 0);  // pad 0 after EOS
  EXPECT_EQ(batch.input_ids[2][15].item<int64_t>(), 1);
  EXPECT_EQ(batch.attention_mask[2].sum().item<int64_t>(), 16);
  // max_length defaults to Wan's 512; 1 leaves room for EOS only.
  EXPECT_EQ(tokenizer.encode({"a red circle"}).input_ids.sizes(), (std::vector<int64_t>{1, 512}));
  EXPECT_EQ(tokenizer.tokenize("a red circle", 1), (std::vector<int64_t>{1}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { tokenizer.encode({"a"}, 0); }, {"max_length must be >= 1"}));
}

TEST(Tokenizer, CleansPromptsAsDiffusersWanDoes) {
  // Expected values from diffusers.pipelines.wan.pipeline_wan.prompt_clean (without ftfy).
  EXPECT_EQ(clean_prompt("  a  \t b\n"), "a b");
  EXPECT_EQ(clean_prompt("x\u00a0\u3000\u2029y"), "x y");  // Unicode whitespace
  EXPECT_EQ(clean_prompt("\x1c a \x1f"), "a");             // str.strip() also takes 0x1C..0x1F
  EXPECT_EQ(clean_prompt("a &amp;amp; b"), "a & b");       // unescaped twice
  EXPECT_EQ(clean_prompt("&lt;&gt;&quot;&apos;&#65;&#x42;&#X43"), "<>\"'ABC");
  EXPECT_EQ(clean_prompt("&ampx &amp &nbsp;z"), "&x & z");  // legacy forms; nbsp is whitespace after
  EXPECT_EQ(clean_prompt("&#150; &#0; &#x110000; &#1;."), "\u2013 \uFFFD \uFFFD .");
  EXPECT_EQ(clean_prompt("&# &#x; &unknown; caf\u00e9"), "&# &#x; &unknown; caf\u00e9");
  EXPECT_EQ(clean_prompt(""), "");
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { clean_prompt("ab\xff"); }, {"not valid UTF-8 at byte 2"}));
  const Tokenizer tokenizer(kSpiece);
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { tokenizer.encode({"ok", "bad \xc3("}); },
                                                 {"prompt 1", "not valid UTF-8 at byte 4"}));
}

TEST(Tokenizer, MissingOrBrokenModelFile) {
  const fs::path dir = fs::temp_directory_path() / ("ditkit-tokenizer-" + std::to_string(::getpid()));
  remove_tree(dir.string());
  fs::create_directories(dir);
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Tokenizer t(dir.string()); },
                                              {(dir / "spiece.model").string(), "no such file"}));
  std::ofstream(dir / "spiece.model") << "not a model";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Tokenizer t(dir.string()); },
                                              {(dir / "spiece.model").string(), "not a sentencepiece model"}));
  remove_tree(dir.string());
}

// The tokenizer and the encoder together, as the Wan pipeline runs them.
TEST(UMT5Encoder, PromptsToContextEndToEnd) {
  const Golden g = golden();
  const TokenBatch batch = Tokenizer(kSpiece).encode(g.prompts, g.max_length);
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kFloat);
  const at::Tensor context = encoder.encode_prompts(batch.input_ids, batch.attention_mask);
  const at::Tensor expected = g.output * g.mask.unsqueeze(-1).to(at::kFloat);
  EXPECT_LE(relative_error(context, expected), 1e-4);
}

#else
TEST(Tokenizer, NeedsSentencepiece) { GTEST_SKIP() << "built without sentencepiece: no tokenizer"; }
#endif  // DITKIT_HAVE_SENTENCEPIECE

// ---------------------------------------------------------------------------------------------
// Encoder against transformers

TEST(UMT5Encoder, Fp32OnCpuMatchesTransformers) {
  const Golden g = golden();
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kFloat);
  const at::Tensor out = encoder.encode(g.ids, g.mask);
  ASSERT_EQ(out.sizes(), g.output.sizes());
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const double err = relative_error(out, g.output);
  RecordProperty("relative_error", std::to_string(err));
  std::cout << "fp32 CPU vs transformers fp32: max relative error " << err << "\n";
  EXPECT_LE(err, 1e-4);
}

// bf16 rounds where transformers rounds, so its error against the fp32 golden is of the size of
// transformers' own bf16 error (2x is the margin for kernels that sum in another order).
void expect_bf16_like_transformers(at::Device device) {
  const Golden g = golden();
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, device, at::kBFloat16);
  const at::Tensor out = encoder.encode(g.ids, g.mask);
  ASSERT_EQ(out.scalar_type(), at::kBFloat16);
  const double reference_err = relative_error(g.output_bf16, g.output);
  const double err = relative_error(out, g.output);
  std::cout << "bf16 on " << device << " vs transformers fp32: max relative error " << err
            << " (transformers' bf16 run: " << reference_err << ")\n";
  EXPECT_LE(err, 2 * reference_err);
}

TEST(UMT5Encoder, Bf16OnCpuErrsLikeTransformersBf16) { expect_bf16_like_transformers(at::kCPU); }

TEST(UMT5EncoderCuda, Bf16ErrsLikeTransformersBf16) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_bf16_like_transformers(at::Device(at::kCUDA, 0));
}

// float16 keeps the FFN output projections in fp32 (and the residual stream turns fp32 after the
// first of them, as PyTorch promotes); the tiny model stays far from fp16's range, so this
// checks the path runs and stays close, not the clamp.
TEST(UMT5Encoder, Fp16RunsCloseToFp32) {
  const Golden g = golden();
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kHalf);
  const at::Tensor out = encoder.encode(g.ids, g.mask);
  EXPECT_EQ(out.scalar_type(), at::kHalf);
  EXPECT_LE(relative_error(out, g.output), 1e-2);
}

TEST(UMT5Encoder, EncodePromptsZeroesPastEachLength) {
  const Golden g = golden();
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kFloat);
  const at::Tensor out = encoder.encode_prompts(g.ids, g.mask);
  ASSERT_EQ(out.sizes(), g.output.sizes());
  for (int64_t b = 0; b < g.ids.size(0); ++b) {
    const int64_t n = g.mask[b].sum().item<int64_t>();
    EXPECT_LE(relative_error(out[b].narrow(0, 0, n), g.output[b].narrow(0, 0, n)), 1e-4) << "prompt " << b;
    EXPECT_TRUE(at::equal(out[b].slice(0, n), at::zeros_like(out[b].slice(0, n)))) << "prompt " << b;
  }
  // The padded positions of the plain encode are not zero: the zeroing is the pipeline's step.
  EXPECT_GT(encoder.encode(g.ids, g.mask)[3].slice(0, 1).abs().max().item<double>(), 0);
}

// Moving the encoder (off the GPU after encoding, in the pipeline) keeps every weight: the moved
// copy encodes exactly as the original, and the original stays usable.
TEST(UMT5Encoder, MovedCopyEncodesTheSame) {
  const Golden g = golden();
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kFloat);
  const at::Device target = at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const UMT5Encoder moved = encoder.to(target);
  EXPECT_EQ(moved.device(), target);
  const UMT5Encoder back = moved.to(at::kCPU);
  EXPECT_EQ(back.device(), at::Device(at::kCPU));
  EXPECT_TRUE(at::equal(back.encode(g.ids, g.mask), encoder.encode(g.ids, g.mask)));
  EXPECT_LE(relative_error(moved.encode(g.ids, g.mask).cpu(), g.output), 1e-4);
}

TEST(UMT5Config, ReadsTheTinyConfigAndKnowsXxl) {
  const UMT5Config c = load_umt5_config(kEncoderDir + "/config.json");
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.d_kv, 8);
  EXPECT_EQ(c.d_ff, 64);
  EXPECT_EQ(c.vocab_size, 356);
  EXPECT_EQ(c.relative_attention_num_buckets, 32);
  EXPECT_EQ(c.relative_attention_max_distance, 128);
  const UMT5Config xxl = umt5_xxl_config();
  EXPECT_EQ(xxl.inner_dim(), 4096);
  EXPECT_EQ(xxl.vocab_size, 256384);
  EXPECT_NO_THROW(validate_umt5_config(xxl, "xxl"));
}

// ---------------------------------------------------------------------------------------------
// Bad checkpoints, configs and inputs. Each test copies the tiny encoder into a fresh folder of
// its own and breaks one thing.

class UMT5BadInput : public testing_support::TinyModelCopy {
 protected:
  UMT5BadInput() : TinyModelCopy(kEncoderDir, "model.safetensors") {}

  UMT5Encoder load() const {
    write();
    return UMT5Encoder::load(dir_.string(), at::kCPU, at::kFloat);
  }
};

TEST_F(UMT5BadInput, MissingWeightFileOrConfig) {
  expect_missing_files_named([](const std::string& dir) { UMT5Encoder::load(dir, at::kCPU, at::kFloat); });
}

// umT5 has a relative position bias in every layer (T5 only in the first).
TEST_F(UMT5BadInput, MissingTensor) {
  tensors_.erase("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"model.safetensors", "no tensor 'encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight'"}));
}

TEST_F(UMT5BadInput, TensorWithWrongShape) {
  tensors_["encoder.block.0.layer.1.DenseReluDense.wo.weight"] = at::zeros({32, 48});
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(); }, {"'encoder.block.0.layer.1.DenseReluDense.wo.weight'",
                                                                "has shape [32, 48], expected [32, 64]", "d_ff 64"}));
}

TEST_F(UMT5BadInput, TensorWithWrongDtype) {
  tensors_["encoder.final_layer_norm.weight"] = at::ones({32}, at::kInt);
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"'encoder.final_layer_norm.weight'", "dtype Int", "expected a floating type"}));
}

TEST_F(UMT5BadInput, TensorsTheConfigDoesNotAccountFor) {
  config_["num_layers"] = 1;
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"tensors that the config does not account for", "'encoder.block.1.", "1 layers"}));
}

TEST_F(UMT5BadInput, VocabSizeDisagreesWithTheEmbedding) {
  config_["vocab_size"] = 400;
  EXPECT_TRUE(throws_with<std::runtime_error>(
      [&] { load(); }, {"'shared.weight'", "has shape [356, 32], expected [400, 32]", "vocab_size 400"}));
}

// transformers uses encoder.embed_tokens.weight where the checkpoint has it, shared.weight otherwise.
TEST_F(UMT5BadInput, EitherEmbeddingKeyLoads) {
  const Golden g = golden();
  const at::Tensor shared = tensors_["shared.weight"];
  tensors_.erase("shared.weight");
  tensors_["encoder.embed_tokens.weight"] = shared;
  EXPECT_LE(relative_error(load().encode(g.ids, g.mask), g.output), 1e-4);
  tensors_["shared.weight"] = at::zeros_like(shared);  // present but unused beside embed_tokens
  EXPECT_LE(relative_error(load().encode(g.ids, g.mask), g.output), 1e-4);
}

TEST_F(UMT5BadInput, ConfigValuesOutOfRange) {
  auto expect_field_error = [&](const char* field, nlohmann::json value, const std::string& problem) {
    nlohmann::json saved = config_;
    config_[field] = value;
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { load(); },
                                                {config_path(), "field '" + std::string(field) + "'", problem}))
        << field;
    config_ = saved;
  };
  expect_field_error("num_layers", 0, "must be >= 1, got 0");
  expect_field_error("num_heads", -4, "must be >= 1, got -4");
  expect_field_error("d_kv", 0, "must be >= 1");
  expect_field_error("vocab_size", 0, "must be >= 1");
  expect_field_error("relative_attention_num_buckets", 31, "must be even and >= 4");
  expect_field_error("relative_attention_max_distance", 8, "must be > relative_attention_num_buckets / 4 = 8");
  expect_field_error("layer_norm_epsilon", -1e-6, "must be a positive number");
  expect_field_error("feed_forward_proj", "relu", "must be \"gated-gelu\"");
  expect_field_error("d_model", "32", "must be an integer, got \"32\"");
  expect_field_error("model_type", "t5", "not \"umt5\"");
}

TEST_F(UMT5BadInput, ConfigNotJson) {
  std::ofstream(config_path()) << "{\"d_model\": 32,";
  EXPECT_TRUE(
      throws_with<std::runtime_error>([&] { load_umt5_config(config_path()); }, {config_path(), "not valid JSON"}));
}

TEST(UMT5BadEncode, IdsOutOfTheVocabOrInputsOfTheWrongShape) {
  const UMT5Encoder encoder = UMT5Encoder::load(kEncoderDir, at::kCPU, at::kFloat);
  const at::Tensor mask = at::ones({1, 3}, at::kLong);
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { encoder.encode(at::tensor({5, 356, 1}, at::kLong).view({1, 3}), mask); },
      {"ids hold 356", "outside the vocabulary [0, 356)"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { encoder.encode(at::tensor({5, -1, 1}, at::kLong).view({1, 3}), mask); }, {"ids hold -1"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { encoder.encode(at::ones({3}, at::kLong), at::ones({3})); },
                                                 {"ids must be integer [B, L]", "[3]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { encoder.encode(at::ones({1, 3}, at::kFloat), mask); },
                                                 {"ids must be integer [B, L]", "Float"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { encoder.encode(at::ones({1, 3}, at::kLong), at::ones({1, 4})); },
                                                 {"mask must have the shape of ids [1, 3]", "[1, 4]"}));
}

}  // namespace
}  // namespace ditkit
