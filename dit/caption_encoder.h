// The shipped model's text encoder: a word-level vocabulary (its vocab.txt) and a small
// pre-LayerNorm transformer encoder over it. It only has to tell apart captions made from a few
// dozen words ("a red circle moves left on a blue background"), so words, not sub-words, are its
// tokens, and an unknown word is an error rather than a guess. The modules live in
// caption_encoder.cpp; weights are named as in caption_encoder/model.safetensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ditkit {

// caption_encoder/config.json.
struct CaptionEncoderConfig {
  int64_t vocab_size = 0;  // the vocabulary's words + 1 (id 0 is padding)
  int64_t dim = 128;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t ffn = 512;
  int64_t max_length = 32;  // tokens per prompt: the context length the DiT sees
  double eps = 1e-5;        // LayerNorm epsilon
  // false: each token's attention sees only itself, so a word's vector depends on the word and
  // its position alone and never carries a neighbour's meaning (an unseen pair of words is then
  // two vectors training has seen). The weights are the same either way.
  bool token_mixing = true;
};

// Reads a caption_encoder/config.json; `_class_name`, when present, must be "CaptionEncoder".
// Throws std::runtime_error naming the file and the field.
CaptionEncoderConfig load_caption_encoder_config(const std::string& config_json_path);

// Throws std::runtime_error naming `where` and the field when a value is out of range.
void validate_caption_encoder_config(const CaptionEncoderConfig& config, const std::string& where);

// Token ids of a batch of prompts, right-padded with 0.
struct CaptionTokens {
  at::Tensor ids;                // int64 [N, max_length]
  std::vector<int64_t> lengths;  // words per prompt, 0..max_length
};

// Words <-> ids. The word on line i of vocab.txt (counting from 1) has id i; 0 is padding.
class CaptionVocabulary {
 public:
  // Words as tokenize() produces them: non-empty, lower-case letters and digits, each once.
  // `source` names where they came from in error messages. Throws std::invalid_argument.
  explicit CaptionVocabulary(std::vector<std::string> words, std::string source = "the vocabulary");

  // Reads vocab.txt (one word per line). Throws std::runtime_error naming the file and the line.
  static CaptionVocabulary load(const std::string& path);
  // Writes vocab.txt atomically.
  void save(const std::string& path) const;

  // Lower-cases each prompt, turns ASCII punctuation into spaces and splits on whitespace; each
  // word becomes its id. An empty prompt is all padding (length 0). A word outside the vocabulary
  // or more than max_length words throw std::invalid_argument naming the prompt, the word or the
  // count, and the vocabulary's source.
  CaptionTokens tokenize(const std::vector<std::string>& prompts, int64_t max_length) const;

  const std::vector<std::string>& words() const { return words_; }
  int64_t size() const { return int64_t(words_.size()) + 1; }  // ids 0..size()-1, padding included
  const std::string& source() const { return source_; }

 private:
  std::vector<std::string> words_;
  std::unordered_map<std::string, int64_t> ids_;
  std::string source_;
};

class CaptionEncoder {
 public:
  // dir: a caption_encoder/ folder (config.json, vocab.txt, model.safetensors). dtype: float32,
  // bfloat16 or float16; stored weights of any floating dtype are converted to it. Every tensor's
  // shape is checked against the config, tensors it does not account for are refused, and the
  // vocabulary must have config.vocab_size - 1 words; errors (std::runtime_error) name the file
  // and the tensor or field.
  static CaptionEncoder load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // Fresh weights for training or tests: N(0, 0.02) embeddings and projections, zero biases,
  // unit LayerNorms, drawn on the CPU from `seed`. config.vocab_size is set from `vocabulary`.
  static CaptionEncoder random(CaptionEncoderConfig config, CaptionVocabulary vocabulary, uint64_t seed,
                               at::Device device, at::ScalarType dtype);

  // The vocabulary's tokenize() at the config's max_length.
  CaptionTokens tokenize(const std::vector<std::string>& prompts) const;

  // ids: integer [N, L] (L <= max_length; 0 is padding, which no key attends to) -> [N, L, dim]
  // in the model's dtype, on its device, zero at padded positions (as Wan's pipeline zeroes
  // umT5's output past the prompt). Plain differentiable ATen ops. Bad shapes or ids throw
  // std::invalid_argument.
  at::Tensor encode(const at::Tensor& ids) const;

  // The weights encode() reads, by their names in model.safetensors, in module order: the same
  // tensors, so a trainer may set requires_grad on them and update them in place.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  // Writes `dir`/config.json, vocab.txt and model.safetensors (the folder must exist; each file
  // appears complete or not at all), the weights cast to `dtype` (bfloat16 halves the file; load
  // converts back to the run dtype).
  void save(const std::string& dir, at::ScalarType dtype) const;

  const CaptionEncoderConfig& config() const;
  const CaptionVocabulary& vocabulary() const;
  at::Device device() const;
  at::ScalarType dtype() const;

 private:
  struct Model;  // the module tree, defined in caption_encoder.cpp
  explicit CaptionEncoder(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable once built, so copies share it (and its tensors)
};

}  // namespace ditkit
