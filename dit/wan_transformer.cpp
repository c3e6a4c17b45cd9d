// Wan2.1's transformer, one module per class, bottom-up as diffusers' transformer_wan.py has them:
// weights -> linear -> attention -> condition embeddings -> RoPE -> block -> model.
// Each class holds its weights as tensors named after their checkpoint keys, and each forward
// does the same operations in the same dtypes as diffusers, so fp32 agrees to rounding and bf16
// rounds where diffusers rounds.
#include "dit/atomic_file.h"
#include "dit/checked_checkpoint.h"
#include "dit/config_json.h"
#include "dit/model_weights.h"
#include "dit/wan_transformer.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <stdexcept>
#include <vector>

#include "dit/safetensors.h"
#include "kernels/dense_attention.h"
#include "kernels/dit_block_ops.h"

namespace ditkit {
namespace {

using cfg::check_run_dtype;
using cfg::shape_str;
using nlohmann::json;

// diffusers' WanTransformer3DModel._keep_in_fp32_modules: a weight stays fp32 when one of the
// dot-separated parts of its key is one of these (model_loading_utils.load_model_dict_into_meta).
// "rope" has no weights here either; its tables are fp32 by construction.
const char* const kKeepInFp32[] = {"rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"};

bool keeps_fp32(const std::string& key) {
  std::stringstream parts(key);
  for (std::string part; std::getline(parts, part, '.');)
    for (const char* name : kKeepInFp32)
      if (part == name) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Weights: from a checkpoint or drawn at random (dit/model_weights.h).

// How a weight starts when drawn at random (what diffusers' modules start with, except that
// projections use N(0, 0.02) instead of PyTorch's uniform).
enum class Init { kProjection, kZeros, kOnes, kModulation };

using Weights = ModelWeights<Init>;

at::Tensor draw(const Init& init, at::IntArrayRef shape, at::Generator& generator) {
  switch (init) {
    case Init::kProjection:
      return at::empty(shape, at::kFloat).normal_(0.0, 0.02, generator);
    case Init::kZeros:
      return at::zeros(shape, at::kFloat);
    case Init::kOnes:
      return at::ones(shape, at::kFloat);
    case Init::kModulation:  // nn.Parameter(torch.randn(1, n, dim) / dim**0.5)
      return at::empty(shape, at::kFloat).normal_(0.0, 1.0, generator) / std::sqrt(double(shape.back()));
  }
  throw std::logic_error("wan_transformer: unknown Init");
}

// The run dtype, or fp32 for the modules diffusers keeps in fp32.
Weights::DtypeOf run_dtype(at::ScalarType dtype) {
  return [dtype](const std::string& key) { return keeps_fp32(key) ? at::kFloat : dtype; };
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

struct Linear {  // nn.Linear(in, out) with bias
  at::Tensor weight, bias;
  Linear(Weights& w, const std::string& prefix, int64_t in, int64_t out)
      : weight(w(prefix + ".weight", {out, in}, Init::kProjection)), bias(w(prefix + ".bias", {out}, Init::kZeros)) {}
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

// ---------------------------------------------------------------------------------------------
// WanAttention: q/k/v projections, RMSNorm over all heads on q and k, attention, out projection.
// attn1 attends over the video tokens (with RoPE, through the AttentionMethod), attn2 from the
// video tokens to the text tokens.

struct RotaryEmb {
  at::Tensor cos, sin;  // fp32 [1, S, 1, D/2]
};

// A forward over sequence shards: the group and how this call's tokens split over it. The rotary
// tables, the activations and the output are each rank's shard; only self-attention sees all
// tokens (for its heads).
struct Sharding {
  const SequenceParallel& group;
  SequencePartition partition;
};

struct WanAttention {
  int64_t heads;
  double eps;
  Linear to_q, to_k, to_v, to_out;
  at::Tensor norm_q, norm_k;  // nn.RMSNorm(dim) weights

  WanAttention(Weights& w, const std::string& prefix, const WanConfig& c)
      : heads(c.num_attention_heads),
        eps(c.eps),
        to_q(w, prefix + ".to_q", c.inner_dim(), c.inner_dim()),
        to_k(w, prefix + ".to_k", c.inner_dim(), c.inner_dim()),
        to_v(w, prefix + ".to_v", c.inner_dim(), c.inner_dim()),
        to_out(w, prefix + ".to_out.0", c.inner_dim(), c.inner_dim()),
        norm_q(w(prefix + ".norm_q.weight", {c.inner_dim()}, Init::kOnes)),
        norm_k(w(prefix + ".norm_k.weight", {c.inner_dim()}, Init::kOnes)) {}

  // x [B, S, dim] -> [B, S, dim]; q, k, v are [B, S, H, D] views for the AttentionMethod.
  // Sharded, x and the result are this rank's tokens; the RMSNorm spans all heads, so it (and
  // RoPE, by the shard's global positions) runs before the all-to-all, and the method sees every
  // token for heads / ranks heads.
  at::Tensor self_attention(const at::Tensor& x, const RotaryEmb& rope, RecipeAttention* attention,
                            const AttentionContext& ctx, const Sharding* sharding) const {
    at::Tensor q = rms_norm_rope(to_q(x), norm_q, eps, heads, rope.cos, rope.sin);
    at::Tensor k = rms_norm_rope(to_k(x), norm_k, eps, heads, rope.cos, rope.sin);
    at::Tensor v = split_heads(to_v(x));
    const at::ScalarType dtype = q.scalar_type();
    if (sharding) {
      std::vector<at::Tensor> qkv = sharding->group.to_head_shards({q, k, v}, sharding->partition);
      q = qkv[0], k = qkv[1], v = qkv[2];
    }
    at::Tensor out = attention ? attention->forward(q, k, v, ctx).out : dense_attention(q, k, v).out;
    q.reset(), k.reset(), v.reset();
    out = out.to(dtype);
    if (sharding) out = sharding->group.to_sequence_shard(out, sharding->partition);
    return to_out(out.flatten(2, 3));
  }

  // x [B, S, dim], text [B, L, dim] -> [B, S, dim]; plain SDPA, as diffusers calls it.
  at::Tensor cross_attention(const at::Tensor& x, const at::Tensor& text) const {
    at::Tensor q = rms_norm_rope(to_q(x), norm_q, eps, heads, {}, {});
    at::Tensor k = rms_norm_rope(to_k(text), norm_k, eps, heads, {}, {});
    at::Tensor v = split_heads(to_v(text));
    at::Tensor out = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
    return to_out(out.transpose(1, 2).flatten(2, 3).to(q.scalar_type()));
  }

  at::Tensor split_heads(const at::Tensor& x) const { return x.unflatten(2, {heads, -1}); }
};

// ---------------------------------------------------------------------------------------------
// WanTimeTextImageEmbedding (text-to-video part): sinusoidal timestep -> time_embedder (fp32)
// -> temb; SiLU -> time_proj -> the six modulation vectors per block; text -> text_embedder.

struct Conditions {
  at::Tensor temb;           // [B, dim], run dtype
  at::Tensor timestep_proj;  // [B, 6, dim], run dtype
  at::Tensor text;           // [B, L, dim], run dtype
};

struct ConditionEmbedder {
  int64_t freq_dim;
  Linear time_linear_1, time_linear_2;  // condition_embedder.time_embedder (TimestepEmbedding)
  Linear time_proj;
  Linear text_linear_1, text_linear_2;  // condition_embedder.text_embedder (PixArtAlphaTextProjection)

  ConditionEmbedder(Weights& w, const WanConfig& c)
      : freq_dim(c.freq_dim),
        time_linear_1(w, "condition_embedder.time_embedder.linear_1", c.freq_dim, c.inner_dim()),
        time_linear_2(w, "condition_embedder.time_embedder.linear_2", c.inner_dim(), c.inner_dim()),
        time_proj(w, "condition_embedder.time_proj", c.inner_dim(), 6 * c.inner_dim()),
        text_linear_1(w, "condition_embedder.text_embedder.linear_1", c.text_dim, c.inner_dim()),
        text_linear_2(w, "condition_embedder.text_embedder.linear_2", c.inner_dim(), c.inner_dim()) {}

  // diffusers' get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0, scale=1,
  // max_period=10000): [cos(t*f), sin(t*f)] with f_i = exp(-ln(10000) * i / half), in fp32.
  at::Tensor sinusoidal(const at::Tensor& timestep) const {
    const int64_t half = freq_dim / 2;
    at::Tensor exponent = at::arange(0, half, timestep.options().dtype(at::kFloat)) * (-std::log(10000.0));
    at::Tensor freqs = at::exp(exponent / half);
    at::Tensor angles = timestep.unsqueeze(1).to(at::kFloat) * freqs.unsqueeze(0);
    return at::cat({at::cos(angles), at::sin(angles)}, -1);
  }

  // timestep [B] float, text [B, L, text_dim] in the run dtype.
  Conditions operator()(const at::Tensor& timestep, const at::Tensor& text) const {
    at::Tensor t = sinusoidal(timestep).to(time_linear_1.weight.scalar_type());
    at::Tensor temb = time_linear_2(at::silu(time_linear_1(t))).to(text.scalar_type());  // .type_as(text)
    at::Tensor timestep_proj = time_proj(at::silu(temb)).unflatten(1, {6, -1});
    at::Tensor embedded = text_linear_2(at::gelu(text_linear_1(text), "tanh"));
    return {temb, timestep_proj, embedded};
  }
};

// ---------------------------------------------------------------------------------------------
// WanRotaryPosEmbed: the head dimension is split into frames / rows / columns parts
// (D - 4*(D/6), 2*(D/6), 2*(D/6) channels); each part rotates by position * theta^(-2i/part).
// Tables are computed once in fp64 and kept in fp32, as diffusers' buffers are.

struct WanRotaryPosEmbed {
  at::Tensor cos[3], sin[3];  // fp32 [max_seq_len, part/2] for frames, rows, columns

  WanRotaryPosEmbed(const WanConfig& c, at::Device device) {
    const int64_t D = c.attention_head_dim, hw = 2 * (D / 6);
    const int64_t parts[3] = {D - 2 * hw, hw, hw};
    at::Tensor positions = at::arange(c.rope_max_seq_len, at::kDouble);
    for (int axis = 0; axis < 3; ++axis) {
      // get_1d_rotary_pos_embed(part, max_seq_len, theta=10000, use_real, repeat_interleave_real):
      // its repeat-interleaved columns are equal in pairs, so one column per pair is kept.
      at::Tensor freqs = 1.0 / at::pow(10000.0, at::arange(0, parts[axis], 2, at::kDouble) / double(parts[axis]));
      at::Tensor angles = at::outer(positions, freqs);
      cos[axis] = angles.cos().to(device, at::kFloat);
      sin[axis] = angles.sin().to(device, at::kFloat);
    }
  }

  // cos/sin [1, S, 1, D/2] for the frame-major tokens of `grid`.
  RotaryEmb operator()(const LatentGrid& grid) const {
    auto table = [&](const at::Tensor(&t)[3]) {
      const int64_t F = grid.frames, H = grid.height, W = grid.width;
      at::Tensor f = t[0].narrow(0, 0, F).view({F, 1, 1, -1}).expand({F, H, W, -1});
      at::Tensor h = t[1].narrow(0, 0, H).view({1, H, 1, -1}).expand({F, H, W, -1});
      at::Tensor w = t[2].narrow(0, 0, W).view({1, 1, W, -1}).expand({F, H, W, -1});
      return at::cat({f, h, w}, -1).reshape({1, F * H * W, 1, -1});
    };
    return {table(cos), table(sin)};
  }
};

// ---------------------------------------------------------------------------------------------
// WanTransformerBlock: AdaLN-modulated self-attention, cross-attention to the text, AdaLN-modulated
// feed-forward. Residual sums and modulation are fp32, rounded to the run dtype after each part.

struct WanTransformerBlock {
  double eps;
  at::Tensor scale_shift_table;  // fp32 [1, 6, dim]: shift, scale, gate (attention), same (ffn)
  WanAttention attn1, attn2;
  at::Tensor norm2_weight, norm2_bias;  // FP32LayerNorm before attn2; undefined without cross_attn_norm
  Linear ffn_in, ffn_out;               // ffn.net.0.proj (then GELU tanh), ffn.net.2

  WanTransformerBlock(Weights& w, const std::string& prefix, const WanConfig& c)
      : eps(c.eps),
        scale_shift_table(w(prefix + ".scale_shift_table", {1, 6, c.inner_dim()}, Init::kModulation)),
        attn1(w, prefix + ".attn1", c),
        attn2(w, prefix + ".attn2", c),
        ffn_in(w, prefix + ".ffn.net.0.proj", c.inner_dim(), c.ffn_dim),
        ffn_out(w, prefix + ".ffn.net.2", c.ffn_dim, c.inner_dim()) {
    if (c.cross_attn_norm) {
      norm2_weight = w(prefix + ".norm2.weight", {c.inner_dim()}, Init::kOnes);
      norm2_bias = w(prefix + ".norm2.bias", {c.inner_dim()}, Init::kZeros);
    }
  }

  // Takes x by value so that each activation is released as soon as the next one exists: the
  // caller moves its tensor in, and peak memory holds one residual stream, not two.
  // timestep_proj_f32: the condition embedder's [B, 6, dim] in fp32 (cast once for all blocks).
  at::Tensor forward(at::Tensor x, const at::Tensor& text, const at::Tensor& timestep_proj_f32, const RotaryEmb& rope,
                     RecipeAttention* attention, const AttentionContext& ctx, const Sharding* sharding) const {
    std::vector<at::Tensor> m = (scale_shift_table + timestep_proj_f32).chunk(6, 1);  // [B, 1, dim] each
    const at::Tensor &shift_msa = m[0], &scale_msa = m[1], &gate_msa = m[2];
    const at::Tensor &c_shift_msa = m[3], &c_scale_msa = m[4], &c_gate_msa = m[5];

    // 1. Self-attention
    at::Tensor attn_out = attn1.self_attention(modulated_layer_norm(x, {}, {}, scale_msa, shift_msa, eps), rope,
                                               attention, ctx, sharding);
    x = gated_residual(x, attn_out, gate_msa);
    attn_out.reset();

    // 2. Cross-attention (norm2 is nn.Identity without cross_attn_norm)
    at::Tensor norm_x = norm2_weight.defined() ? modulated_layer_norm(x, norm2_weight, norm2_bias, {}, {}, eps) : x;
    attn_out = attn2.cross_attention(norm_x, text);
    norm_x.reset();
    x = gated_residual(x, attn_out, {});
    attn_out.reset();

    // 3. Feed-forward
    at::Tensor hidden = linear_gelu_tanh(modulated_layer_norm(x, {}, {}, c_scale_msa, c_shift_msa, eps),
                                         ffn_in.weight, ffn_in.bias);
    at::Tensor ff_out = ffn_out(hidden);
    hidden.reset();
    return gated_residual(x, ff_out, c_gate_msa);
  }
};

// A compact statement of the config values the weight shapes follow from, for error messages.
std::string describe(const WanConfig& c) {
  std::ostringstream s;
  s << "inner_dim " << c.inner_dim() << " = " << c.num_attention_heads << " heads x " << c.attention_head_dim << ", "
    << c.num_layers << " layers, ffn_dim " << c.ffn_dim << ", text_dim " << c.text_dim << ", freq_dim " << c.freq_dim
    << ", channels " << c.in_channels << " in / " << c.out_channels << " out, patch " << c.patch_size[0] << "x"
    << c.patch_size[1] << "x" << c.patch_size[2] << ", cross_attn_norm " << (c.cross_attn_norm ? "true" : "false");
  return s.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// WanTransformer3DModel: patchify (Conv3d) -> blocks -> AdaLN output norm -> proj_out -> unpatchify.

struct WanTransformer::Model {
  WanConfig config;
  at::Device device;
  at::ScalarType dtype;
  WanRotaryPosEmbed rope;
  at::Tensor patch_embedding_weight, patch_embedding_bias;  // Conv3d, kernel = stride = patch_size
  ConditionEmbedder condition_embedder;
  std::vector<WanTransformerBlock> blocks;
  Linear proj_out;
  at::Tensor scale_shift_table;  // fp32 [1, 2, dim]: shift, scale of the output norm
  std::vector<std::pair<std::string, at::Tensor>> parameters;  // all of the above, by key

  Model(Weights& w, const WanConfig& c, at::Device device, at::ScalarType dtype)
      : config(c),
        device(device),
        dtype(dtype),
        rope(c, device),
        patch_embedding_weight(w("patch_embedding.weight",
                                 {c.inner_dim(), c.in_channels, c.patch_size[0], c.patch_size[1], c.patch_size[2]},
                                 Init::kProjection)),
        patch_embedding_bias(w("patch_embedding.bias", {c.inner_dim()}, Init::kZeros)),
        condition_embedder(w, c),
        proj_out(w, "proj_out", c.inner_dim(), c.out_channels * c.patch_size[0] * c.patch_size[1] * c.patch_size[2]),
        scale_shift_table(w("scale_shift_table", {1, 2, c.inner_dim()}, Init::kModulation)) {
    blocks.reserve(size_t(c.num_layers));
    for (int64_t i = 0; i < c.num_layers; ++i) blocks.emplace_back(w, "blocks." + std::to_string(i), c);
    parameters = w.taken();
  }
};

WanTransformer WanTransformer::load(const std::string& dir, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "WanTransformer::load");
  const WanConfig config = load_wan_config((std::filesystem::path(dir) / "config.json").string());
  SafetensorsCheckpoint checkpoint = open_safetensors(dir);
  CheckedCheckpoint tensors(checkpoint, describe(config), "a diffusers-format Wan2.1 transformer");
  Weights weights(tensors, device, run_dtype(dtype));
  auto model = std::make_shared<const Model>(weights, config, device, dtype);
  // diffusers drops norm_added_q on load (_keys_to_ignore_on_load_unexpected).
  tensors.check_all_taken([](const std::string& key) { return key.find("norm_added_q") == std::string::npos; });
  return WanTransformer(std::move(model));
}

WanTransformer WanTransformer::random(const WanConfig& config, uint64_t seed, at::Device device, at::ScalarType dtype) {
  check_run_dtype(dtype, "WanTransformer::random");
  validate_wan_config(config, "WanTransformer::random");
  Weights weights(seed, draw, device, run_dtype(dtype));
  return WanTransformer(std::make_shared<const Model>(weights, config, device, dtype));
}

std::vector<std::pair<std::string, at::Tensor>> WanTransformer::named_parameters() const {
  return model_->parameters;
}

void WanTransformer::save(const std::string& dir, at::ScalarType dtype, uint64_t max_shard_bytes) const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, weight] : model_->parameters)
    tensors.emplace(key, weight.detach().to(at::kCPU, keeps_fp32(key) ? at::kFloat : dtype));
  save_safetensors_sharded(dir, "diffusion_pytorch_model", tensors, max_shard_bytes);
  write_text_file((std::filesystem::path(dir) / "config.json").string(), wan_config_json(model_->config));
}

const WanConfig& WanTransformer::config() const { return model_->config; }
at::Device WanTransformer::device() const { return model_->device; }
at::ScalarType WanTransformer::dtype() const { return model_->dtype; }

LatentGrid WanTransformer::token_grid(int64_t frames, int64_t height, int64_t width) const {
  const WanConfig& c = model_->config;
  const char* names[3] = {"frames", "height", "width"};
  const int64_t sizes[3] = {frames, height, width};
  int64_t tokens[3];
  for (int i = 0; i < 3; ++i) {
    const int64_t p = c.patch_size[i], most = c.rope_max_seq_len * p;
    if (sizes[i] < p || sizes[i] % p != 0 || sizes[i] > most)
      throw std::invalid_argument("WanTransformer: latents " + std::string(names[i]) + " " + std::to_string(sizes[i]) +
                                  " cannot be patched: the patch size " + std::to_string(p) + " and rope_max_seq_len " +
                                  std::to_string(c.rope_max_seq_len) + " take multiples of " + std::to_string(p) +
                                  " from " + std::to_string(p) + " to " + std::to_string(most));
    tokens[i] = sizes[i] / p;
  }
  return {tokens[0], tokens[1], tokens[2]};
}

at::Tensor WanTransformer::forward(const at::Tensor& latents_in, const at::Tensor& timestep_in,
                                   const at::Tensor& context_in, RecipeAttention* attention, int step,
                                   int num_steps, const SequenceParallel* parallel) const {
  const Model& m = *model_;
  const WanConfig& c = m.config;
  if (latents_in.dim() != 5 || latents_in.size(1) != c.in_channels)
    throw std::invalid_argument("WanTransformer: latents must be [B, " + std::to_string(c.in_channels) +
                                ", F, H, W], got " + shape_str(latents_in.sizes()));
  const int64_t B = latents_in.size(0);
  const LatentGrid grid = token_grid(latents_in.size(2), latents_in.size(3), latents_in.size(4));
  if (timestep_in.dim() != 1 || timestep_in.size(0) != B)
    throw std::invalid_argument("WanTransformer: timestep must be [" + std::to_string(B) + "] (one per latent), got " +
                                shape_str(timestep_in.sizes()));
  if (context_in.dim() != 3 || context_in.size(0) != B || context_in.size(2) != c.text_dim || context_in.size(1) < 1)
    throw std::invalid_argument("WanTransformer: context must be [" + std::to_string(B) + ", L, " +
                                std::to_string(c.text_dim) + "] (text_dim " + std::to_string(c.text_dim) + "), got " +
                                shape_str(context_in.sizes()));

  std::optional<Sharding> sharding;
  if (parallel) {
    parallel->check_heads(c.num_attention_heads);
    sharding.emplace(Sharding{*parallel, parallel->partition(grid.tokens())});
  }

  const at::Tensor latents = latents_in.to(m.device, m.dtype);
  const at::Tensor timestep = timestep_in.to(m.device, at::kFloat);
  const at::Tensor context = context_in.to(m.device, m.dtype);

  AttentionContext ctx;
  ctx.step = step;
  ctx.num_steps = num_steps;
  ctx.timestep = timestep_in[0].item<double>();  // the one host read per call, outside the layer loop
  ctx.grid = grid;
  ctx.text_length = context.size(1);

  RotaryEmb rope = m.rope(grid);
  const auto& p = c.patch_size;
  at::Tensor x = at::conv3d(latents, m.patch_embedding_weight, m.patch_embedding_bias, {p[0], p[1], p[2]});
  x = x.flatten(2).transpose(1, 2).contiguous();  // [B, S, dim], frame-major tokens
  if (sharding) {  // from here on this rank's tokens: the rotary tables' rows are global positions
    const SequencePartition& part = sharding->partition;
    rope = {part.take(rope.cos, 1).contiguous(), part.take(rope.sin, 1).contiguous()};
    x = part.take(x, 1).contiguous();
  }
  const Sharding* shards = sharding ? &*sharding : nullptr;

  const Conditions cond = m.condition_embedder(timestep, context);
  const at::Tensor timestep_proj_f32 = cond.timestep_proj.to(at::kFloat);
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    ctx.layer = int(i);
    x = m.blocks[i].forward(std::move(x), cond.text, timestep_proj_f32, rope, attention, ctx, shards);
  }

  std::vector<at::Tensor> shift_scale = (m.scale_shift_table + cond.temb.unsqueeze(1)).chunk(2, 1);  // fp32
  x = modulated_layer_norm(x, {}, {}, shift_scale[1], shift_scale[0], c.eps);
  x = m.proj_out(x);  // [B, S, p_t * p_h * p_w * C_out]
  // Gathered after the output projection, where a token is p_t·p_h·p_w·C_out values, not dim.
  if (sharding) x = sharding->group.gather_sequence(x, sharding->partition);

  // Unpatchify: [B, F', H', W', p_t, p_h, p_w, C] -> [B, C, F' p_t, H' p_h, W' p_w].
  x = x.reshape({B, grid.frames, grid.height, grid.width, p[0], p[1], p[2], -1}).permute({0, 7, 1, 4, 2, 5, 3, 6});
  return x.reshape({B, c.out_channels, grid.frames * p[0], grid.height * p[1], grid.width * p[2]});
}

}  // namespace ditkit
