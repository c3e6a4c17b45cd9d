// The configuration of a Wan2.1 text-to-video transformer, as diffusers' WanTransformer3DModel
// names it in a checkpoint's transformer/config.json.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace ditkit {

// Defaults are diffusers' constructor defaults (the 14B model), so that a config.json that leaves
// a field out means what it means to diffusers.
struct WanConfig {
  std::array<int64_t, 3> patch_size = {1, 2, 2};  // frames, height, width
  int64_t num_attention_heads = 40;
  int64_t attention_head_dim = 128;
  int64_t in_channels = 16;
  int64_t out_channels = 16;
  int64_t text_dim = 4096;
  int64_t freq_dim = 256;  // sinusoidal timestep embedding width
  int64_t ffn_dim = 13824;
  int64_t num_layers = 40;
  bool cross_attn_norm = true;                    // a LayerNorm (with affine) before cross-attention
  std::string qk_norm = "rms_norm_across_heads";  // the only kind Wan2.1 uses
  double eps = 1e-6;
  int64_t rope_max_seq_len = 1024;  // the most latent frames, rows or columns (after patching) RoPE covers

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
};

// Reads a diffusers config.json. Fields it does not know are ignored (diffusers' own bookkeeping
// such as _diffusers_version); image-to-video fields (image_dim, added_kv_proj_dim,
// pos_embed_seq_len) must be null or absent. Throws std::runtime_error naming the file and the
// field on a missing file, bad JSON, a field of the wrong type or a value out of range.
WanConfig load_wan_config(const std::string& config_json_path);

// Throws std::runtime_error naming `where` and the field when a value is out of range.
void validate_wan_config(const WanConfig& config, const std::string& where);

// The config.json diffusers writes for `config` (_class_name WanTransformer3DModel), so a saved
// model loads in diffusers as well as here.
std::string wan_config_json(const WanConfig& config);

// Wan2.1-T2V-1.3B: 12 heads x 128, ffn 8960, 30 layers, text_dim 4096, 16 channels.
WanConfig wan_config_1_3b();

}  // namespace ditkit
