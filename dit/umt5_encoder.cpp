// umT5's encoder, one module per class, bottom-up as transformers' modeling_umt5.py has them:
// config -> weights -> layer norm -> attention (with its own relative position bias in every
// layer, unlike T5) -> gated feed-forward -> block -> stack. Each forward does the same operations
// with the same dtype promotions as transformers (ATen promotes as PyTorch does), so fp32 agrees to
// rounding and bf16/fp16 round where transformers rounds.
#include "dit/checked_checkpoint.h"
#include "dit/config_json.h"
#include "dit/umt5_encoder.h"

#include <ATen/ATen.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "dit/safetensors.h"

namespace ditkit {
namespace {

using cfg::check_run_dtype;
using cfg::fail;
using cfg::field;
using cfg::read_int;
using cfg::require_at_least;
using cfg::shape_str;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Config

// A compact statement of the config values the weight shapes follow from, for error messages.
std::string describe(const UMT5Config& c) {
  std::ostringstream s;
  s << "d_model " << c.d_model << ", " << c.num_layers << " layers, inner_dim " << c.inner_dim() << " = "
    << c.num_heads << " heads x d_kv " << c.d_kv << ", d_ff " << c.d_ff << ", vocab_size " << c.vocab_size << ", "
    << c.relative_attention_num_buckets << " buckets";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Weights, by checkpoint key, with shape and dtype checked.

// transformers' UMT5PreTrainedModel._keep_in_fp32_modules: the FFN output projection stays fp32
// when the model loads as float16 (not bfloat16: transformers applies the list to fp16 only).
bool keeps_fp32(const std::string& key, at::ScalarType dtype) {
  return dtype == at::kHalf && key.find(".DenseReluDense.wo.") != std::string::npos;
}

class Weights {
 public:
  Weights(SafetensorsCheckpoint& checkpoint, std::string expectation, at::Device device, at::ScalarType dtype)
      : tensors_(checkpoint, std::move(expectation), "a transformers UMT5EncoderModel text_encoder"),
        device_(device),
        dtype_(dtype) {}

  // The tensor `key` of `shape` on the model's device, in the run dtype (or fp32, keeps_fp32).
  at::Tensor operator()(const std::string& key, std::vector<int64_t> shape) {
    return tensors_.take(key, shape).to(device_, keeps_fp32(key, dtype_) ? at::kFloat : dtype_);
  }

  bool contains(const std::string& key) const { return tensors_.contains(key); }

  // A tensor the model does not use but that must still fit the config (shared.weight beside
  // encoder.embed_tokens.weight): checked, counted as taken, not copied to the device.
  void check_unused(const std::string& key, std::vector<int64_t> shape) { tensors_.take(key, shape); }

  void check_all_taken() const { tensors_.check_all_taken(); }

 private:
  CheckedCheckpoint tensors_;
  at::Device device_;
  at::ScalarType dtype_;
};

// ---------------------------------------------------------------------------------------------
// UMT5LayerNorm: RMS norm without mean subtraction or bias; the mean of squares in fp32, the
// product in the promoted type, rounded to the weight's dtype when that is half precision.
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor y = x * at::rsqrt(variance + eps);
  if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) y = y.to(weight.scalar_type());
  return weight * y;
}

// UMT5Block clamps the residual stream after each part when it is float16, so an overflow to inf
// becomes the largest finite value (less 1000 when any inf appeared) instead of spreading.
at::Tensor clamp_fp16(const at::Tensor& x) {
  if (x.scalar_type() != at::kHalf) return x;
  const double max = std::numeric_limits<c10::Half>::max();
  at::Tensor limit = at::where(at::isinf(x).any(), at::scalar_tensor(max - 1000, x.options()),
                               at::scalar_tensor(max, x.options()));
  return at::clamp(x, -limit, limit);
}

// UMT5Attention._relative_position_bucket for the encoder (bidirectional): half the buckets for
// keys after the query; within each half, exact distances below num_buckets/4 and log-spaced
// ones up to max_distance, beyond which all share the last bucket. Returns int64 [L, L].
at::Tensor relative_position_buckets(int64_t length, int64_t num_buckets_total, int64_t max_distance,
                                     at::Device device) {
  const at::TensorOptions longs = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor context = at::arange(length, longs).unsqueeze(1);
  at::Tensor memory = at::arange(length, longs).unsqueeze(0);
  at::Tensor relative = memory - context;
  const int64_t num_buckets = num_buckets_total / 2;
  at::Tensor buckets = (relative > 0).to(at::kLong) * num_buckets;
  relative = relative.abs();
  const int64_t max_exact = num_buckets / 2;
  at::Tensor is_small = relative < max_exact;
  // log(0) is -inf at distance 0; is_small discards that entry, as in transformers.
  at::Tensor log_ratio = at::log(relative.to(at::kFloat) / double(max_exact)) /
                         std::log(double(max_distance) / double(max_exact)) * double(num_buckets - max_exact);
  at::Tensor if_large = at::clamp_max(max_exact + log_ratio.to(at::kLong), num_buckets - 1);
  return buckets + at::where(is_small, relative, if_large);
}

// ---------------------------------------------------------------------------------------------
// UMT5LayerSelfAttention: layer norm, q/k/v without bias, no 1/sqrt(d) scaling, the layer's own
// relative position bias added to the scores, masked keys at the dtype's lowest value, output
// projection, residual.

struct SelfAttention {
  int64_t heads, num_buckets, max_distance;
  double eps;
  at::Tensor layer_norm_weight, q, k, v, o;
  at::Tensor relative_attention_bias;  // [num_buckets, heads]

  SelfAttention(Weights& w, const std::string& prefix, const UMT5Config& c)
      : heads(c.num_heads),
        num_buckets(c.relative_attention_num_buckets),
        max_distance(c.relative_attention_max_distance),
        eps(c.layer_norm_epsilon),
        layer_norm_weight(w(prefix + ".layer_norm.weight", {c.d_model})),
        q(w(prefix + ".SelfAttention.q.weight", {c.inner_dim(), c.d_model})),
        k(w(prefix + ".SelfAttention.k.weight", {c.inner_dim(), c.d_model})),
        v(w(prefix + ".SelfAttention.v.weight", {c.inner_dim(), c.d_model})),
        o(w(prefix + ".SelfAttention.o.weight", {c.d_model, c.inner_dim()})),
        relative_attention_bias(w(prefix + ".SelfAttention.relative_attention_bias.weight", {num_buckets, heads})) {}

  void move_to(at::Device d) {
    for (at::Tensor* t : {&layer_norm_weight, &q, &k, &v, &o, &relative_attention_bias}) *t = t->to(d);
  }

  // x [B, L, d_model]; buckets int64 [L, L]; keep bool [B, 1, 1, L] (true: may be attended to).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& buckets, const at::Tensor& keep) const {
    const int64_t B = x.size(0), L = x.size(1);
    at::Tensor h = layer_norm(x, layer_norm_weight, eps);
    auto split = [&](const at::Tensor& t) { return t.view({B, L, heads, -1}).transpose(1, 2); };
    at::Tensor qs = split(at::linear(h, q)), ks = split(at::linear(h, k)), vs = split(at::linear(h, v));
    // compute_bias: [L, L, H] -> [1, H, L, L]; then transformers' create_position_bias_mask.
    at::Tensor bias = at::embedding(relative_attention_bias, buckets).permute({2, 0, 1}).unsqueeze(0);
    const double lowest = ks.scalar_type() == at::kFloat    ? std::numeric_limits<float>::lowest()
                          : ks.scalar_type() == at::kHalf ? double(std::numeric_limits<c10::Half>::lowest())
                                                          : double(std::numeric_limits<c10::BFloat16>::lowest());
    at::Tensor scores_mask = at::where(keep, bias, at::scalar_tensor(lowest, bias.options())).contiguous();
    at::Tensor out = at::scaled_dot_product_attention(qs, ks, vs, scores_mask, 0.0, false, /*scale=*/1.0);
    out = out.transpose(1, 2).reshape({B, L, -1});
    return x + at::linear(out, o);
  }
};

// UMT5LayerFF with UMT5DenseGatedActDense: layer norm, gelu_new (tanh) of wi_0 times wi_1, cast
// to wo's dtype (fp32 under float16), wo, residual.
struct FeedForward {
  double eps;
  at::Tensor layer_norm_weight, wi_0, wi_1, wo;

  FeedForward(Weights& w, const std::string& prefix, const UMT5Config& c)
      : eps(c.layer_norm_epsilon),
        layer_norm_weight(w(prefix + ".layer_norm.weight", {c.d_model})),
        wi_0(w(prefix + ".DenseReluDense.wi_0.weight", {c.d_ff, c.d_model})),
        wi_1(w(prefix + ".DenseReluDense.wi_1.weight", {c.d_ff, c.d_model})),
        wo(w(prefix + ".DenseReluDense.wo.weight", {c.d_model, c.d_ff})) {}

  void move_to(at::Device d) {
    for (at::Tensor* t : {&layer_norm_weight, &wi_0, &wi_1, &wo}) *t = t->to(d);
  }

  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor h = layer_norm(x, layer_norm_weight, eps);
    at::Tensor gated = at::gelu(at::linear(h, wi_0), "tanh") * at::linear(h, wi_1);
    return x + at::linear(gated.to(wo.scalar_type()), wo);
  }
};

// UMT5Block (encoder): self-attention, then feed-forward, each followed by the fp16 clamp.
struct Block {
  SelfAttention attention;
  FeedForward feed_forward;

  Block(Weights& w, const std::string& prefix, const UMT5Config& c)
      : attention(w, prefix + ".layer.0", c), feed_forward(w, prefix + ".layer.1", c) {}

  void move_to(at::Device d) {
    attention.move_to(d);
    feed_forward.move_to(d);
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& buckets, const at::Tensor& keep) const {
    return clamp_fp16(feed_forward.forward(clamp_fp16(attention.forward(x, buckets, keep))));
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config reading

void validate_umt5_config(const UMT5Config& c, const std::string& where) {
  require_at_least(c.vocab_size, 1, "vocab_size", where);
  require_at_least(c.d_model, 1, "d_model", where);
  require_at_least(c.d_kv, 1, "d_kv", where);
  require_at_least(c.d_ff, 1, "d_ff", where);
  require_at_least(c.num_layers, 1, "num_layers", where);
  require_at_least(c.num_heads, 1, "num_heads", where);
  // Half the buckets for each direction, and within a half at least one exact and one log bucket.
  if (c.relative_attention_num_buckets < 4 || c.relative_attention_num_buckets % 2 != 0)
    fail(where, "relative_attention_num_buckets",
         "must be even and >= 4 (half for each direction, each half split into exact and log-spaced "
         "distances), got " +
             std::to_string(c.relative_attention_num_buckets));
  // The log-spaced buckets span max_exact = num_buckets/4 .. max_distance.
  if (c.relative_attention_max_distance <= c.relative_attention_num_buckets / 4)
    fail(where, "relative_attention_max_distance",
         "must be > relative_attention_num_buckets / 4 = " + std::to_string(c.relative_attention_num_buckets / 4) +
             ", got " + std::to_string(c.relative_attention_max_distance));
  if (c.feed_forward_proj != "gated-gelu")
    fail(where, "feed_forward_proj",
         "must be \"gated-gelu\" (what umT5 and Wan use), got \"" + c.feed_forward_proj + "\"");
  if (!(c.layer_norm_epsilon > 0) || !std::isfinite(c.layer_norm_epsilon))
    fail(where, "layer_norm_epsilon", "must be a positive number, got " + std::to_string(c.layer_norm_epsilon));
}

UMT5Config load_umt5_config(const std::string& path) {
  const json config = cfg::read_config_json(path);
  if (const json* type = field(config, "model_type"); type && *type != "umt5")
    fail(path, "model_type", "is " + type->dump() + ", not \"umt5\" (is this Wan's text_encoder/ folder?)");

  UMT5Config c;
  read_int(config, "vocab_size", c.vocab_size, path);
  read_int(config, "d_model", c.d_model, path);
  read_int(config, "d_kv", c.d_kv, path);
  read_int(config, "d_ff", c.d_ff, path);
  read_int(config, "num_layers", c.num_layers, path);
  read_int(config, "num_heads", c.num_heads, path);
  read_int(config, "relative_attention_num_buckets", c.relative_attention_num_buckets, path);
  read_int(config, "relative_attention_max_distance", c.relative_attention_max_distance, path);
  if (const json* proj = field(config, "feed_forward_proj")) {
    if (!proj->is_string()) fail(path, "feed_forward_proj", "must be a string, got " + proj->dump());
    c.feed_forward_proj = proj->get<std::string>();
  }
  if (const json* eps = field(config, "layer_norm_epsilon")) {
    if (!eps->is_number()) fail(path, "layer_norm_epsilon", "must be a number, got " + eps->dump());
    c.layer_norm_epsilon = eps->get<double>();
  }
  validate_umt5_config(c, path);
  return c;
}

UMT5Config umt5_xxl_config() {
  UMT5Config c;
  c.vocab_size = 256384;
  c.d_model = 4096;
  c.d_kv = 64;
  c.d_ff = 10240;
  c.num_layers = 24;
  c.num_heads = 64;
  return c;
}

// ---------------------------------------------------------------------------------------------
// UMT5EncoderModel: token embedding -> blocks -> final layer norm.

struct UMT5Encoder::Model {
  UMT5Config config;
  at::Device device;
  at::ScalarType dtype;
  at::Tensor embed_tokens;  // [vocab_size, d_model]
  std::vector<Block> blocks;
  at::Tensor final_layer_norm;

  Model(Weights& w, const UMT5Config& c, at::Device device, at::ScalarType dtype)
      : config(c), device(device), dtype(dtype) {
    // transformers ties encoder.embed_tokens to shared; a checkpoint may hold either or both,
    // and where both are present the encoder uses its own (checked: tie_word_embeddings).
    const bool own = w.contains("encoder.embed_tokens.weight");
    embed_tokens = w(own ? "encoder.embed_tokens.weight" : "shared.weight", {c.vocab_size, c.d_model});
    if (own && w.contains("shared.weight")) w.check_unused("shared.weight", {c.vocab_size, c.d_model});
    blocks.reserve(size_t(c.num_layers));
    for (int64_t i = 0; i < c.num_layers; ++i) blocks.emplace_back(w, "encoder.block." + std::to_string(i), c);
    final_layer_norm = w("encoder.final_layer_norm.weight", {c.d_model});
  }

  void move_to(at::Device d) {
    device = d;
    embed_tokens = embed_tokens.to(d);
    final_layer_norm = final_layer_norm.to(d);
    for (Block& b : blocks) b.move_to(d);
  }
};

UMT5Encoder UMT5Encoder::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "UMT5Encoder::load");
  const UMT5Config config = load_umt5_config((std::filesystem::path(dir) / "config.json").string());
  SafetensorsCheckpoint checkpoint = open_safetensors(dir);
  Weights weights(checkpoint, describe(config), device, dtype);
  auto model = std::make_shared<const Model>(weights, config, device, dtype);
  weights.check_all_taken();
  return UMT5Encoder(std::move(model));
}

UMT5Encoder UMT5Encoder::to(at::Device device) const {
  auto moved = std::make_shared<Model>(*model_);  // shares the tensors until each is moved
  moved->move_to(device);
  return UMT5Encoder(std::move(moved));
}

const UMT5Config& UMT5Encoder::config() const { return model_->config; }
at::Device UMT5Encoder::device() const { return model_->device; }
at::ScalarType UMT5Encoder::dtype() const { return model_->dtype; }

at::Tensor UMT5Encoder::encode(const at::Tensor& ids_in, const at::Tensor& mask_in) const {
  const Model& m = *model_;
  if (ids_in.dim() != 2 || ids_in.size(1) < 1 || !at::isIntegralType(ids_in.scalar_type(), /*includeBool=*/false))
    throw std::invalid_argument("UMT5Encoder: ids must be integer [B, L] with L >= 1, got " +
                                std::string(c10::toString(ids_in.scalar_type())) + " " + shape_str(ids_in.sizes()));
  if (mask_in.sizes() != ids_in.sizes())
    throw std::invalid_argument("UMT5Encoder: mask must have the shape of ids " + shape_str(ids_in.sizes()) +
                                ", got " + shape_str(mask_in.sizes()));
  if (ids_in.numel() > 0) {
    // at::embedding would fail on the CPU without naming the id, and trap on the GPU.
    const int64_t lo = ids_in.min().item<int64_t>(), hi = ids_in.max().item<int64_t>();
    if (lo < 0 || hi >= m.config.vocab_size)
      throw std::invalid_argument("UMT5Encoder: ids hold " + std::to_string(lo < 0 ? lo : hi) +
                                  ", outside the vocabulary [0, " + std::to_string(m.config.vocab_size) + ")");
  }
  const at::Tensor ids = ids_in.to(m.device, at::kLong);
  const at::Tensor keep = (mask_in.to(m.device) != 0).view({ids.size(0), 1, 1, ids.size(1)});
  const at::Tensor buckets = relative_position_buckets(ids.size(1), m.config.relative_attention_num_buckets,
                                                       m.config.relative_attention_max_distance, m.device);
  at::Tensor x = at::embedding(m.embed_tokens, ids);
  for (const Block& block : m.blocks) x = block.forward(x, buckets, keep);
  return layer_norm(x, m.final_layer_norm, m.config.layer_norm_epsilon);
}

at::Tensor UMT5Encoder::encode_prompts(const at::Tensor& ids, const at::Tensor& mask) const {
  at::Tensor out = encode(ids, mask);
  // The pipeline keeps u[:seq_len] with seq_len = the count of nonzero mask entries, and pads
  // with zeros (for the tokenizer's right-padded masks that is the mask itself). Selecting, not
  // multiplying, so that an inf past the length still becomes 0.
  at::Tensor lengths = (mask.to(out.device()) != 0).sum(1, /*keepdim=*/true);  // [B, 1]
  at::Tensor positions = at::arange(out.size(1), lengths.options()).unsqueeze(0);
  return at::where((positions < lengths).unsqueeze(-1), out, at::scalar_tensor(0, out.options()));
}

}  // namespace ditkit
