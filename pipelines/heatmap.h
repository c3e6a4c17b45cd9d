// Heat-map images of block attention maps: one fixed log colour scale for every tile, tiles laid
// out in a labelled grid, and the scale drawn beside them, so maps of different layers, heads
// and steps compare by eye. Drawn with ATen and pipelines/bitmap_font.h; written with png.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

namespace ditkit {

// The colour scale spans kHeatmapMinMass .. 1 of a row's mass on a log10 axis (viridis colours);
// smaller values take the bottom colour.
constexpr double kHeatmapMinMass = 1e-4;
std::array<uint8_t, 3> heat_colour(double mass);

// maps [R, C, NQ, NK] (each map's rows summing to 1) -> uint8 [height, width, 3] on the CPU:
// tile (r, c) shows maps[r][c], labelled `row_prefix`r on the left and `col_prefix`c on top, under
// `title` and `caption` (what the colour means), with the colour bar on the right. Other values
// in 0..1 that read well on a log scale (dit-profile's relative errors) may be drawn too, with
// their own caption. Small maps are scaled up by a whole factor; maps over kMaxTileCells blocks a
// side are pooled to fit: query blocks averaged and key blocks summed, so a cell still shows the
// share of its row's mass it holds.
constexpr int64_t kMaxTileCells = 128;
at::Tensor draw_heatmap_grid(const at::Tensor& maps, const std::string& title, const std::string& row_prefix,
                             const std::string& col_prefix,
                             const std::string& caption = "colour: share of row mass per block (log)");

}  // namespace ditkit
