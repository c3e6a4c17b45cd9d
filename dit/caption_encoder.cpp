// The caption encoder, bottom-up: config -> vocabulary -> weights -> layer -> model. Pre-LayerNorm
// layers (self-attention with a key padding mask, then a GELU MLP), each a residual branch, and a
// final LayerNorm; every op is a plain ATen op so the trainer can backpropagate through it.
#include "dit/caption_encoder.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "dit/atomic_file.h"
#include "dit/checked_checkpoint.h"
#include "dit/config_json.h"
#include "dit/model_weights.h"
#include "dit/safetensors.h"

namespace ditkit {
namespace {

using cfg::check_run_dtype;
using cfg::fail;
using cfg::read_bool;
using cfg::read_int;
using cfg::require_at_least;
using cfg::shape_str;
using nlohmann::json;

namespace fs = std::filesystem;

std::string sub(const std::string& dir, const char* name) { return (fs::path(dir) / name).string(); }

std::string describe(const CaptionEncoderConfig& c) {
  std::ostringstream s;
  s << "vocab_size " << c.vocab_size << ", dim " << c.dim << ", " << c.layers << " layers, " << c.heads
    << " heads, ffn " << c.ffn << ", max_length " << c.max_length << (c.token_mixing ? "" : ", no token mixing");
  return s.str();
}

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

// ---------------------------------------------------------------------------------------------
// Weights: from a checkpoint, or drawn at random (dit/model_weights.h).

enum class Init { kNormal, kZeros, kOnes };

using Weights = ModelWeights<Init>;

at::Tensor draw(const Init& init, at::IntArrayRef shape, at::Generator& generator) {
  switch (init) {
    case Init::kNormal:
      return at::empty(shape, at::kFloat).normal_(0.0, 0.02, generator);
    case Init::kZeros:
      return at::zeros(shape, at::kFloat);
    case Init::kOnes:
      return at::ones(shape, at::kFloat);
  }
  throw std::logic_error("caption_encoder: unknown Init");
}

// ---------------------------------------------------------------------------------------------
// Modules.

struct Linear {
  at::Tensor weight, bias;  // bias undefined without one
  Linear(Weights& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias = true)
      : weight(w(prefix + ".weight", {out, in}, Init::kNormal)),
        bias(has_bias ? w(prefix + ".bias", {out}, Init::kZeros) : at::Tensor()) {}
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

struct LayerNorm {
  at::Tensor weight, bias;
  double eps;
  LayerNorm(Weights& w, const std::string& prefix, int64_t dim, double eps)
      : weight(w(prefix + ".weight", {dim}, Init::kOnes)), bias(w(prefix + ".bias", {dim}, Init::kZeros)), eps(eps) {}
  at::Tensor operator()(const at::Tensor& x) const { return at::layer_norm(x, {x.size(-1)}, weight, bias, eps); }
};

// x + attention(norm1(x)), then x + fc2(gelu(fc1(norm2(x)))). The attention scales by 1/sqrt(head dim).
struct EncoderLayer {
  int64_t heads;
  LayerNorm norm1;
  Linear to_q, to_k, to_v, to_out;
  LayerNorm norm2;
  Linear fc1, fc2;

  EncoderLayer(Weights& w, const std::string& prefix, const CaptionEncoderConfig& c)
      : heads(c.heads),
        norm1(w, prefix + ".norm1", c.dim, c.eps),
        to_q(w, prefix + ".attention.to_q", c.dim, c.dim),
        // A key bias adds the same q.b to every score of a query, which softmax ignores: none.
        to_k(w, prefix + ".attention.to_k", c.dim, c.dim, /*has_bias=*/false),
        to_v(w, prefix + ".attention.to_v", c.dim, c.dim),
        to_out(w, prefix + ".attention.to_out", c.dim, c.dim),
        norm2(w, prefix + ".norm2", c.dim, c.eps),
        fc1(w, prefix + ".ffn.fc1", c.dim, c.ffn),
        fc2(w, prefix + ".ffn.fc2", c.ffn, c.dim) {}

  // x [N, L, dim]; keep bool, broadcast to [N, heads, L, L]: the keys each query may attend to.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& keep) const {
    const int64_t N = x.size(0), L = x.size(1);
    at::Tensor h = norm1(x);
    auto split = [&](const at::Tensor& t) { return t.view({N, L, heads, -1}).transpose(1, 2); };
    at::Tensor out = at::scaled_dot_product_attention(split(to_q(h)), split(to_k(h)), split(to_v(h)), keep);
    at::Tensor y = x + to_out(out.transpose(1, 2).reshape({N, L, -1}));
    return y + fc2(at::gelu(fc1(norm2(y))));
  }
};

bool is_word_char(unsigned char c) { return std::islower(c) || std::isdigit(c); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

void validate_caption_encoder_config(const CaptionEncoderConfig& c, const std::string& where) {
  require_at_least(c.vocab_size, 2, "vocab_size", where);  // padding and at least one word
  require_at_least(c.dim, 1, "dim", where);
  require_at_least(c.layers, 1, "layers", where);
  require_at_least(c.heads, 1, "heads", where);
  require_at_least(c.ffn, 1, "ffn", where);
  require_at_least(c.max_length, 1, "max_length", where);
  if (c.dim % c.heads != 0)
    fail(where, "dim", "must be a multiple of heads (" + std::to_string(c.heads) + "), got " + std::to_string(c.dim));
  if (!(c.eps > 0) || !std::isfinite(c.eps))
    fail(where, "eps", "must be a positive number, got " + std::to_string(c.eps));
}

CaptionEncoderConfig load_caption_encoder_config(const std::string& path) {
  const json config = cfg::read_config_json(path);
  if (const json* name = cfg::field(config, "_class_name"); name && *name != "CaptionEncoder")
    fail(path, "_class_name", "is " + name->dump() + ", not \"CaptionEncoder\" (is this a caption_encoder/ folder?)");
  CaptionEncoderConfig c;
  c.vocab_size = 0;  // no default: it must match vocab.txt
  read_int(config, "vocab_size", c.vocab_size, path);
  read_int(config, "dim", c.dim, path);
  read_int(config, "layers", c.layers, path);
  read_int(config, "heads", c.heads, path);
  read_int(config, "ffn", c.ffn, path);
  read_int(config, "max_length", c.max_length, path);
  cfg::read_double(config, "eps", c.eps, path);
  read_bool(config, "token_mixing", c.token_mixing, path);
  validate_caption_encoder_config(c, path);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

CaptionVocabulary::CaptionVocabulary(std::vector<std::string> words, std::string source)
    : words_(std::move(words)), source_(std::move(source)) {
  if (words_.empty()) throw std::invalid_argument(source_ + " holds no words");
  for (size_t i = 0; i < words_.size(); ++i) {
    const std::string& w = words_[i];
    // A word tokenize() could never produce would be an id no prompt reaches.
    for (unsigned char ch : w)
      if (!is_word_char(ch))
        throw std::invalid_argument(source_ + ": word " + std::to_string(i + 1) + " " + in_quotes(w) +
                                    " must be lower-case letters and digits only");
    if (w.empty()) throw std::invalid_argument(source_ + ": word " + std::to_string(i + 1) + " is empty");
    if (!ids_.emplace(w, int64_t(i) + 1).second)
      throw std::invalid_argument(source_ + ": word " + std::to_string(i + 1) + " " + in_quotes(w) + " appears twice");
  }
}

CaptionVocabulary CaptionVocabulary::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open the vocabulary file");
  std::vector<std::string> words;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    words.push_back(line);
  }
  try {
    return CaptionVocabulary(std::move(words), "its vocabulary file " + path);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());  // a broken file, not a bad argument
  }
}

void CaptionVocabulary::save(const std::string& path) const {
  std::string text;
  for (const std::string& w : words_) text += w + "\n";
  write_text_file(path, text);
}

CaptionTokens CaptionVocabulary::tokenize(const std::vector<std::string>& prompts, int64_t max_length) const {
  if (max_length < 1) throw std::invalid_argument("CaptionVocabulary::tokenize: max_length must be >= 1");
  CaptionTokens tokens;
  tokens.ids = at::zeros({int64_t(prompts.size()), max_length}, at::kLong);
  auto ids = tokens.ids.accessor<int64_t, 2>();
  for (size_t p = 0; p < prompts.size(); ++p) {
    std::vector<std::string> words(1);
    for (unsigned char ch : prompts[p]) {
      if (std::isspace(ch) || (ch < 0x80 && std::ispunct(ch))) {
        if (!words.back().empty()) words.emplace_back();
      } else {
        words.back() += char(std::tolower(ch));
      }
    }
    if (words.back().empty()) words.pop_back();
    if (int64_t(words.size()) > max_length)
      throw std::invalid_argument("prompt " + in_quotes(prompts[p]) + " has " + std::to_string(words.size()) +
                                  " words; this model takes at most " + std::to_string(max_length));
    for (size_t i = 0; i < words.size(); ++i) {
      auto it = ids_.find(words[i]);
      if (it == ids_.end()) {
        std::string known;
        for (const std::string& w : words_) known += (known.empty() ? "" : ", ") + w;
        throw std::invalid_argument("prompt " + in_quotes(prompts[p]) + ": unknown word " + in_quotes(words[i]) +
                                    "; this model knows only the " + std::to_string(words_.size()) + " words of " +
                                    source_ + ": " + known);
      }
      ids[int64_t(p)][int64_t(i)] = it->second;
    }
    tokens.lengths.push_back(int64_t(words.size()));
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// The model: token and position embeddings -> layers -> final LayerNorm.

struct CaptionEncoder::Model {
  CaptionEncoderConfig config;
  CaptionVocabulary vocabulary;
  at::Device device;
  at::ScalarType dtype;
  at::Tensor token_embedding;     // [vocab_size, dim]
  at::Tensor position_embedding;  // [max_length, dim]
  std::vector<EncoderLayer> layers;
  LayerNorm final_norm;
  std::vector<std::pair<std::string, at::Tensor>> parameters;  // all of the above, by name

  Model(Weights& w, const CaptionEncoderConfig& c, CaptionVocabulary v, at::Device device, at::ScalarType dtype)
      : config(c),
        vocabulary(std::move(v)),
        device(device),
        dtype(dtype),
        token_embedding(w("token_embedding.weight", {c.vocab_size, c.dim}, Init::kNormal)),
        position_embedding(w("position_embedding.weight", {c.max_length, c.dim}, Init::kNormal)),
        layers(make_layers(w, c)),
        final_norm(w, "final_norm", c.dim, c.eps),
        parameters(w.taken()) {}

  static std::vector<EncoderLayer> make_layers(Weights& w, const CaptionEncoderConfig& c) {
    std::vector<EncoderLayer> layers;
    layers.reserve(size_t(c.layers));
    for (int64_t i = 0; i < c.layers; ++i) layers.emplace_back(w, "layers." + std::to_string(i), c);
    return layers;
  }
};

CaptionEncoder CaptionEncoder::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "CaptionEncoder::load");
  const std::string config_path = sub(dir, "config.json");
  const CaptionEncoderConfig config = load_caption_encoder_config(config_path);
  CaptionVocabulary vocabulary = CaptionVocabulary::load(sub(dir, "vocab.txt"));
  if (vocabulary.size() != config.vocab_size)
    throw std::runtime_error(config_path + ": field 'vocab_size' is " + std::to_string(config.vocab_size) + ", but " +
                             sub(dir, "vocab.txt") + " holds " + std::to_string(vocabulary.words().size()) +
                             " words (vocab_size counts them and the padding id 0)");
  SafetensorsCheckpoint checkpoint = open_safetensors(dir);
  CheckedCheckpoint tensors(checkpoint, describe(config), "a ditkit caption_encoder/ folder");
  Weights weights(tensors, device, [dtype](const std::string&) { return dtype; });
  auto model = std::make_shared<const Model>(weights, config, std::move(vocabulary), device, dtype);
  tensors.check_all_taken();
  return CaptionEncoder(std::move(model));
}

CaptionEncoder CaptionEncoder::random(CaptionEncoderConfig config, CaptionVocabulary vocabulary, uint64_t seed,
                                      at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "CaptionEncoder::random");
  config.vocab_size = vocabulary.size();
  validate_caption_encoder_config(config, "CaptionEncoder::random");
  Weights weights(seed, draw, device, [dtype](const std::string&) { return dtype; });
  return CaptionEncoder(std::make_shared<const Model>(weights, config, std::move(vocabulary), device, dtype));
}

CaptionTokens CaptionEncoder::tokenize(const std::vector<std::string>& prompts) const {
  return model_->vocabulary.tokenize(prompts, model_->config.max_length);
}

at::Tensor CaptionEncoder::encode(const at::Tensor& ids_in) const {
  const Model& m = *model_;
  if (ids_in.dim() != 2 || ids_in.size(1) < 1 || ids_in.size(1) > m.config.max_length ||
      !at::isIntegralType(ids_in.scalar_type(), /*includeBool=*/false))
    throw std::invalid_argument("CaptionEncoder: ids must be integer [N, L] with 1 <= L <= max_length " +
                                std::to_string(m.config.max_length) + ", got " +
                                std::string(c10::toString(ids_in.scalar_type())) + " " + shape_str(ids_in.sizes()));
  if (ids_in.numel() > 0) {
    // at::embedding would fail on the CPU without naming the id, and trap on the GPU.
    const int64_t lo = ids_in.min().item<int64_t>(), hi = ids_in.max().item<int64_t>();
    if (lo < 0 || hi >= m.config.vocab_size)
      throw std::invalid_argument("CaptionEncoder: ids hold " + std::to_string(lo < 0 ? lo : hi) +
                                  ", outside the vocabulary [0, " + std::to_string(m.config.vocab_size) + ")");
  }
  const at::Tensor ids = ids_in.to(m.device, at::kLong);
  const int64_t N = ids.size(0), L = ids.size(1);
  const at::Tensor words = ids != 0;  // [N, L]
  // An empty prompt has no key to attend to; letting its queries see every (padding) key keeps
  // softmax finite, and its output is zeroed below anyway. Without token mixing each query sees
  // only its own position.
  const at::Tensor keep = m.config.token_mixing
                              ? (words | words.any(1, /*keepdim=*/true).logical_not()).view({N, 1, 1, L})
                              : at::eye(L, ids.options().dtype(at::kBool)).view({1, 1, L, L});
  at::Tensor x = at::embedding(m.token_embedding, ids) + m.position_embedding.narrow(0, 0, L);
  for (const EncoderLayer& layer : m.layers) x = layer.forward(x, keep);
  x = m.final_norm(x);
  // Selecting, not multiplying, so that padding contributes nothing, not even to gradients.
  return at::where(words.unsqueeze(-1), x, at::scalar_tensor(0, x.options()));
}

std::vector<std::pair<std::string, at::Tensor>> CaptionEncoder::named_parameters() const { return model_->parameters; }

void CaptionEncoder::save(const std::string& dir, at::ScalarType dtype) const {
  const CaptionEncoderConfig& c = model_->config;
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : model_->parameters) tensors[name] = t.detach().to(dtype);
  save_safetensors(sub(dir, "model.safetensors"), tensors, {{"format", "pt"}});
  model_->vocabulary.save(sub(dir, "vocab.txt"));
  const json config = {{"_class_name", "CaptionEncoder"},
                       {"vocab_size", c.vocab_size},
                       {"dim", c.dim},
                       {"layers", c.layers},
                       {"heads", c.heads},
                       {"ffn", c.ffn},
                       {"max_length", c.max_length},
                       {"eps", c.eps},
                       {"token_mixing", c.token_mixing}};
  write_text_file(sub(dir, "config.json"), config.dump(2) + "\n");
}

const CaptionEncoderConfig& CaptionEncoder::config() const { return model_->config; }
const CaptionVocabulary& CaptionEncoder::vocabulary() const { return model_->vocabulary; }
at::Device CaptionEncoder::device() const { return model_->device; }
at::ScalarType CaptionEncoder::dtype() const { return model_->dtype; }

}  // namespace ditkit
