// Token reordering: the layout transforms that make a sparse pattern block-dense (temporal heads
// go frame-major -> position-major; PARO picks one of the six orders of the F, H, W axes; `tile`
// lists the tokens cube by cube, so a block is a neighbourhood in space and time).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>

namespace ditkit {

// The six orders of the F, H, W axes, from the outermost axis to the innermost; frame-major
// (fhw, the identity) first.
inline constexpr std::array<const char*, 6> kAxisOrders{"fhw", "fwh", "hfw", "hwf", "wfh", "whf"};

// A permutation of S = F·H·W frame-major tokens that lists them in `order`, a string of the
// letters f, h, w from the outermost axis to the innermost: "fhw" is the identity, "hwf" puts
// the frames of one position next to each other. permuted[i] = original[perm[i]]. int64 [S].
at::Tensor axis_order_permutation(int64_t frames, int64_t height, int64_t width, const std::string& order,
                                  at::Device device = at::kCPU);

// A permutation of S = F·H·W frame-major tokens that lists them tile by tile: tiles of
// tile_f x tile_h x tile_w tokens, taken frame-major over the grid of tiles, each tile's tokens
// frame-major. Tiles at the far edges are cut short where a side is not a multiple of the tile's.
// permuted[i] = original[perm[i]]. int64 [S].
at::Tensor tile_permutation(int64_t frames, int64_t height, int64_t width, int64_t tile_f, int64_t tile_h,
                            int64_t tile_w, at::Device device = at::kCPU);

// inverse[perm[i]] = i, for [S] or per-head [H, S] permutations.
at::Tensor invert_permutation(const at::Tensor& perm);

// x [B, S, H, D] -> x reordered along S by perm ([S], shared by all heads, or [H, S], one per
// head): out[b, i, h] = x[b, perm[h][i], h]. Applying invert_permutation(perm) undoes it.
// Differentiable: where autograd records x, the gather is ATen's rather than the CUDA kernel's.
at::Tensor permute_tokens(const at::Tensor& x, const at::Tensor& perm);

// The oracle: loops on the CPU.
at::Tensor permute_tokens_reference(const at::Tensor& x, const at::Tensor& perm);

}  // namespace ditkit
