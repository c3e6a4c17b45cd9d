// The umT5 text encoder as Wan2.1 uses it, numerically the same as transformers' (5.23)
// UMT5EncoderModel, plus the Wan pipeline's step that zeroes each prompt's embeddings past its
// length. Weights are named by their checkpoint keys; the modules live in umt5_encoder.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace ditkit {

// The fields of a text_encoder/config.json that the encoder's shape and arithmetic follow from.
// Defaults are transformers' UMT5Config defaults (umT5-small), so that a config.json that leaves a
// field out means what it means to transformers.
struct UMT5Config {
  int64_t vocab_size = 250112;
  int64_t d_model = 512;
  int64_t d_kv = 64;  // per head
  int64_t d_ff = 1024;
  int64_t num_layers = 8;
  int64_t num_heads = 6;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  std::string feed_forward_proj = "gated-gelu";  // the only kind umT5 checkpoints use
  double layer_norm_epsilon = 1e-6;

  int64_t inner_dim() const { return num_heads * d_kv; }
};

// Reads a transformers config.json. Fields it does not know are ignored (decoder and training
// settings such as num_decoder_layers, dropout_rate); model_type, when present, must be "umt5".
// Throws std::runtime_error naming the file and the field on a missing file, bad JSON, a field of
// the wrong type or a value out of range.
UMT5Config load_umt5_config(const std::string& config_json_path);

// Throws std::runtime_error naming `where` and the field when a value is out of range.
void validate_umt5_config(const UMT5Config& config, const std::string& where);

// umT5-XXL, Wan2.1's text encoder: d_model 4096, 24 layers, 64 heads x 64, d_ff 10240, vocab 256384.
UMT5Config umt5_xxl_config();

class UMT5Encoder {
 public:
  // dir: a text_encoder/ folder (config.json + model.safetensors, or shards with
  // model.safetensors.index.json). dtype: float32 (what the CPU runs), bfloat16 (what Wan runs on
  // the GPU) or float16, where the FFN output projections (`wo`) stay fp32 as transformers keeps
  // them. The token embedding is encoder.embed_tokens.weight, or shared.weight when the
  // checkpoint ties them and stores only that one (transformers' rule). Every tensor's shape and
  // dtype is checked against the config, and tensors the config does not account for are
  // refused; errors (std::runtime_error) name the file and the tensor.
  static UMT5Encoder load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // ids: integer [B, L] token ids in [0, vocab_size); mask: [B, L], nonzero where a key may be
  // attended to -> last_hidden_state [B, L, d_model] in the model's dtype, on its device (inputs
  // are moved there). Every position is computed, padding included, as transformers does; a row
  // whose mask is all zero attends uniformly. Bad shapes or ids out of the vocabulary throw
  // std::invalid_argument naming the input (checking ids reads their range back to the host).
  at::Tensor encode(const at::Tensor& ids, const at::Tensor& mask) const;

  // The Wan pipeline's text context: encode(), then every position at or past each prompt's
  // length (the number of nonzero mask entries in its row) set to zero -> [B, L, d_model].
  // With the tokenizer's max_length 512 this is Wan's [B, 512, 4096] context.
  at::Tensor encode_prompts(const at::Tensor& ids, const at::Tensor& mask) const;

  // The same encoder with its weights on `device`. After encoding, `encoder = encoder.to(at::kCPU)`
  // hands its GPU memory (~11 GiB for umT5-XXL in bf16) back to the DiT and the VAE; moving it
  // back is one copy per weight.
  UMT5Encoder to(at::Device device) const;

  const UMT5Config& config() const;
  at::Device device() const;
  at::ScalarType dtype() const;

 private:
  struct Model;  // the module tree, defined in umt5_encoder.cpp
  explicit UMT5Encoder(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable once built, so copies share it
};

}  // namespace ditkit
