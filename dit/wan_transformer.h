// The Wan2.1 text-to-video diffusion transformer, numerically the same as diffusers'
// WanTransformer3DModel (0.42), with self-attention routed through an AttentionMethod recipe.
// Weights are named by their diffusers checkpoint keys; the modules live in wan_transformer.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dit/sequence_parallel.h"
#include "dit/wan_config.h"
#include "sparse/plan.h"
#include "sparse/recipe_attention.h"

namespace ditkit {

class WanTransformer {
 public:
  // dir: a diffusers transformer/ folder (config.json + diffusion_pytorch_model*.safetensors,
  // sharded or not). dtype: float32, bfloat16 or float16; the modules diffusers keeps in fp32
  // (time embedder, modulation tables, the cross-attention LayerNorm) stay fp32, as there.
  // Every tensor's shape and dtype is checked against the config, and a checkpoint holding
  // tensors the config does not account for is refused; errors (std::runtime_error) name the
  // file and the tensor.
  static WanTransformer load(const std::string& dir, at::Device device, at::ScalarType dtype);

  // Random weights for speed tests without a checkpoint: N(0, 0.02) projections, zero biases,
  // unit norms, diffusers' randn/sqrt(dim) modulation tables. Drawn on the CPU from `seed`, so a
  // seed gives the same weights on every device.
  static WanTransformer random(const WanConfig& config, uint64_t seed, at::Device device, at::ScalarType dtype);

  // latents [B, C_in, F, H, W]; timestep [B] (0..1000); context [B, L, text_dim]
  // -> velocity [B, C_out, F, H, W] in the model's dtype, on its device (inputs are moved there).
  // Self-attention runs through `attention` with AttentionContext {layer, step, num_steps,
  // timestep (of batch entry 0, read once per call), grid, text length}; nullptr means
  // dense_attention(). Bad shapes throw std::invalid_argument naming the input.
  // With `parallel`, this rank computes its shard of the tokens (dit/sequence_parallel.h): every
  // rank passes the same inputs and gets the same whole output; self-attention sees the whole
  // sequence with heads / ranks heads; heads that do not divide over the ranks throw
  // std::invalid_argument. All ranks must call it together.
  at::Tensor forward(const at::Tensor& latents, const at::Tensor& timestep, const at::Tensor& context,
                     RecipeAttention* attention = nullptr, int step = 0, int num_steps = 1,
                     const SequenceParallel* parallel = nullptr) const;

  // The token grid latents of this shape give after patching; throws std::invalid_argument when
  // the patch size or RoPE's range cannot take F, H or W.
  LatentGrid token_grid(int64_t frames, int64_t height, int64_t width) const;

  // The weights the model computes with, by checkpoint key, in module order. They are the tensors
  // forward() reads, so a trainer may set requires_grad on them and update them in place.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  // Writes `dir`/config.json and `dir`/diffusion_pytorch_model.safetensors, or that name's shards
  // and index when the weights take more than `max_shard_bytes` (save_safetensors_sharded; the folder
  // must exist; each file appears complete or not at all). Weights are cast to `dtype` except those
  // diffusers keeps in fp32, which stay fp32.
  void save(const std::string& dir, at::ScalarType dtype, uint64_t max_shard_bytes = UINT64_MAX) const;

  const WanConfig& config() const;
  at::Device device() const;
  at::ScalarType dtype() const;

 private:
  struct Model;  // the module tree, defined in wan_transformer.cpp
  explicit WanTransformer(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable once built, so copies share it
};

}  // namespace ditkit
