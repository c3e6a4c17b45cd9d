// The attention structure of one self-attention call, measured from the exact softmax
// probabilities (not an estimate from pooled q and k): the block map a block-sparse kernel would
// see, the density a mass selection would keep, and how much mass lies in Sparse VideoGen's
// spatial and temporal masks. What dit-profile reports per layer and head.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels/block_select.h"
#include "sparse/plan.h"

namespace ditkit {

struct ExactAttentionMap {
  // float32 [B, H, NQ, NK]: for each query block, the probability mass its rows put in each key
  // block, divided by the rows it has, so every row sums to 1.
  at::Tensor block_map;
  // float32 [B, H]: mass a query puts on keys within ±1 frame of its own, averaged over queries.
  at::Tensor spatial_share;
  // float32 [B, H]: mass a query puts on keys at its own (row, column) in any frame, averaged over queries.
  at::Tensor temporal_share;
};

// q, k [B, S, H, D] (strided views are fine), S = grid.tokens() frame-major; scale <= 0 means
// 1/sqrt(D). Probabilities are computed in fp32 on q's device, whole query blocks at a time with
// about `chunk_bytes` of them per chunk (at least one block), so memory stays bounded at any S.
// Results stay on q's device; nothing synchronises with the host.
ExactAttentionMap exact_attention_map(const at::Tensor& q, const at::Tensor& k, const LatentGrid& grid,
                                      BlockShape blocks, double scale = 0.0, int64_t chunk_bytes = int64_t{256} << 20);

// float64 [B, H]: for each row of `block_map` [B, H, NQ, NK] (rows summing to 1), the fewest key
// blocks whose mass reaches `mass` as a share of NK, averaged over rows. The selection is
// block_select's mass selection with nothing forced, so it is the density `mass` would run.
at::Tensor block_density(const at::Tensor& block_map, const BlockGeometry& geometry, double mass);

enum class HeadClass { kSpatial, kTemporal, kOther };
const char* to_string(HeadClass head_class);

// The share of all keys each mask gives a query, averaged over queries: what uniform attention
// would put in it (the chance level for spatial_share and temporal_share).
double spatial_mask_share(const LatentGrid& grid);
double temporal_mask_share(const LatentGrid& grid);

// The rule: a mask holds a head when the head's mean mass inside it is at least `threshold` and
// uniform attention would not reach that (its mask share is below `threshold`: with two latent
// frames the spatial mask is every key and holds nothing, with three it is 7/9 of them); the head takes the class of
// the smaller mask (fewer keys per query) among those that hold it, `other` when neither does.
// Both masks contain the query's own token, so a head that attends mostly to itself is held by
// both and classed by the smaller one.
constexpr double kHeadClassThreshold = 0.8;
HeadClass classify_head(double spatial_share, double temporal_share, const LatentGrid& grid,
                        double threshold = kHeadClassThreshold);

}  // namespace ditkit
