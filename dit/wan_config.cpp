#include "dit/wan_config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "dit/config_json.h"

namespace ditkit {
namespace {

using cfg::fail;
using cfg::field;
using cfg::read_bool;
using cfg::read_double;
using cfg::read_int;
using cfg::require_at_least;
using nlohmann::json;

}  // namespace

void validate_wan_config(const WanConfig& c, const std::string& where) {
  for (int i = 0; i < 3; ++i)
    if (c.patch_size[i] < 1)
      fail(where, "patch_size",
           "must hold three integers >= 1 (frames, height, width), got " + std::to_string(c.patch_size[i]) +
               " at position " + std::to_string(i));
  require_at_least(c.num_attention_heads, 1, "num_attention_heads", where);
  // RoPE gives 2*(D/6) channels each to rows and columns and the rest to frames; each part must
  // be a positive even number of channels (pairs rotate together).
  if (c.attention_head_dim < 6 || c.attention_head_dim % 2 != 0)
    fail(where, "attention_head_dim",
         "must be even and >= 6 (RoPE splits it into three even parts for frames, rows and columns), got " +
             std::to_string(c.attention_head_dim));
  require_at_least(c.in_channels, 1, "in_channels", where);
  require_at_least(c.out_channels, 1, "out_channels", where);
  require_at_least(c.text_dim, 1, "text_dim", where);
  if (c.freq_dim < 2 || c.freq_dim % 2 != 0)
    fail(where, "freq_dim", "must be even and >= 2 (half sines, half cosines), got " + std::to_string(c.freq_dim));
  require_at_least(c.ffn_dim, 1, "ffn_dim", where);
  require_at_least(c.num_layers, 1, "num_layers", where);
  if (c.qk_norm != "rms_norm_across_heads")
    fail(where, "qk_norm", "must be \"rms_norm_across_heads\" (what Wan2.1 uses), got \"" + c.qk_norm + "\"");
  if (!(c.eps > 0) || !std::isfinite(c.eps))
    fail(where, "eps", "must be a positive number, got " + std::to_string(c.eps));
  require_at_least(c.rope_max_seq_len, 1, "rope_max_seq_len", where);
}

WanConfig load_wan_config(const std::string& path) {
  const json config = cfg::read_config_json(path);

  if (const json* name = field(config, "_class_name"); name && *name != "WanTransformer3DModel")
    fail(path, "_class_name",
         "is " + name->dump() + ", not \"WanTransformer3DModel\" (is this the transformer/ folder?)");
  for (const char* i2v : {"image_dim", "added_kv_proj_dim", "pos_embed_seq_len"})
    if (const json* value = field(config, i2v))
      fail(path, i2v, "is " + value->dump() + ": image-to-video models are not supported (it must be null)");

  WanConfig c;
  if (const json* patch = field(config, "patch_size")) {
    if (!patch->is_array() || patch->size() != 3)
      fail(path, "patch_size", "must be a list of three integers, got " + patch->dump());
    for (int i = 0; i < 3; ++i) {
      if (!(*patch)[i].is_number_integer())
        fail(path, "patch_size", "must be a list of three integers, got " + patch->dump());
      c.patch_size[i] = (*patch)[i].get<int64_t>();
    }
  }
  read_int(config, "num_attention_heads", c.num_attention_heads, path);
  read_int(config, "attention_head_dim", c.attention_head_dim, path);
  read_int(config, "in_channels", c.in_channels, path);
  // diffusers: `out_channels = out_channels or in_channels`, so null and 0 both mean in_channels
  // (an absent field keeps the default, 16).
  if (config.contains("out_channels")) {
    c.out_channels = 0;
    read_int(config, "out_channels", c.out_channels, path);
    if (c.out_channels == 0) c.out_channels = c.in_channels;
  }
  read_int(config, "text_dim", c.text_dim, path);
  read_int(config, "freq_dim", c.freq_dim, path);
  read_int(config, "ffn_dim", c.ffn_dim, path);
  read_int(config, "num_layers", c.num_layers, path);
  read_bool(config, "cross_attn_norm", c.cross_attn_norm, path);
  if (const json* qk = field(config, "qk_norm")) {
    if (!qk->is_string()) fail(path, "qk_norm", "must be a string, got " + qk->dump());
    c.qk_norm = qk->get<std::string>();
  }
  read_double(config, "eps", c.eps, path);
  read_int(config, "rope_max_seq_len", c.rope_max_seq_len, path);
  validate_wan_config(c, path);
  return c;
}

std::string wan_config_json(const WanConfig& c) {
  const json config = {{"_class_name", "WanTransformer3DModel"},
                       {"patch_size", c.patch_size},
                       {"num_attention_heads", c.num_attention_heads},
                       {"attention_head_dim", c.attention_head_dim},
                       {"in_channels", c.in_channels},
                       {"out_channels", c.out_channels},
                       {"text_dim", c.text_dim},
                       {"freq_dim", c.freq_dim},
                       {"ffn_dim", c.ffn_dim},
                       {"num_layers", c.num_layers},
                       {"cross_attn_norm", c.cross_attn_norm},
                       {"qk_norm", c.qk_norm},
                       {"eps", c.eps},
                       {"image_dim", nullptr},
                       {"added_kv_proj_dim", nullptr},
                       {"rope_max_seq_len", c.rope_max_seq_len}};
  return config.dump(2) + "\n";
}

WanConfig wan_config_1_3b() {
  WanConfig c;
  c.num_attention_heads = 12;
  c.attention_head_dim = 128;
  c.ffn_dim = 8960;
  c.num_layers = 30;
  return c;
}

}  // namespace ditkit
