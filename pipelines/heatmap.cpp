#include "pipelines/heatmap.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "pipelines/bitmap_font.h"

namespace ditkit {

namespace {

constexpr int64_t kFontScale = 2, kPad = 8, kGap = 4, kBarWidth = 16, kTargetTile = 96;
constexpr std::array<uint8_t, 3> kInk{30, 30, 30};

}  // namespace

std::array<uint8_t, 3> heat_colour(double mass) {
  // Viridis at five evenly spaced points, interpolated linearly.
  static constexpr double kStops[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  const double lo = std::log10(kHeatmapMinMass);
  const double t = mass > 0 ? std::clamp((std::log10(mass) - lo) / -lo, 0.0, 1.0) : 0.0;
  const double x = t * 4;
  const int i = std::min(3, static_cast<int>(x));
  const double f = x - i;
  std::array<uint8_t, 3> rgb{};
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<uint8_t>(std::lround(kStops[i][c] + f * (kStops[i + 1][c] - kStops[i][c])));
  return rgb;
}

at::Tensor draw_heatmap_grid(const at::Tensor& maps_in, const std::string& title, const std::string& row_prefix,
                             const std::string& col_prefix, const std::string& caption) {
  TORCH_CHECK(maps_in.dim() == 4 && maps_in.numel() > 0, "draw_heatmap_grid: maps must be a non-empty [R, C, NQ, NK], got ",
              maps_in.sizes());
  const int64_t R = maps_in.size(0), C = maps_in.size(1);
  at::Tensor maps = maps_in.to(at::kCPU, at::kDouble);
  const int64_t fq = (maps.size(2) + kMaxTileCells - 1) / kMaxTileCells, fk = (maps.size(3) + kMaxTileCells - 1) / kMaxTileCells;
  if (fq > 1 || fk > 1)
    maps = (at::avg_pool2d(maps.flatten(0, 1).unsqueeze(1), {fq, fk}, {fq, fk}, {0, 0}, /*ceil_mode=*/true) * fk)
               .view({R, C, -1, (maps.size(3) + fk - 1) / fk});
  maps = maps.contiguous();
  const int64_t NQ = maps.size(2), NK = maps.size(3);
  const int64_t scale = std::max<int64_t>(1, kTargetTile / std::max(NQ, NK));
  const int64_t tile_h = NQ * scale, tile_w = NK * scale;

  const int64_t line = kGlyphCellHeight * kFontScale;
  const int64_t label_w = text_width(row_prefix + std::to_string(R - 1), kFontScale) + kGap;
  const int64_t grid_w = C * tile_w + (C - 1) * kGap, grid_h = R * tile_h + (R - 1) * kGap;
  const int64_t bar_h = std::max<int64_t>(grid_h, 120);
  const int64_t top = kPad + 2 * line + kGap + line;  // title, caption, column labels
  const int64_t bar_x = kPad + label_w + grid_w + 2 * kPad;
  const int64_t width = std::max({bar_x + kBarWidth + kGap + text_width("1E-4", kFontScale) + kPad,
                                  2 * kPad + text_width(title, kFontScale), 2 * kPad + text_width(caption, kFontScale)});
  const int64_t height = top + bar_h + kPad;
  at::Tensor image = at::full({height, width, 3}, 255, at::kByte);
  auto px = image.accessor<uint8_t, 3>();
  auto fill = [&](int64_t y, int64_t x, std::array<uint8_t, 3> rgb) {
    for (int c = 0; c < 3; ++c) px[y][x][c] = rgb[c];
  };

  draw_text(image, kPad, kPad, title, kFontScale, kInk);
  draw_text(image, kPad, kPad + line, caption, kFontScale, kInk);
  auto m = maps.accessor<double, 4>();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t y0 = top + r * (tile_h + kGap);
    draw_text(image, kPad, y0 + (tile_h - 5 * kFontScale) / 2, row_prefix + std::to_string(r), kFontScale, kInk);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t x0 = kPad + label_w + c * (tile_w + kGap);
      if (r == 0) draw_text(image, x0, top - line, col_prefix + std::to_string(c), kFontScale, kInk);
      for (int64_t i = 0; i < NQ; ++i)
        for (int64_t j = 0; j < NK; ++j) {
          const std::array<uint8_t, 3> rgb = heat_colour(m[r][c][i][j]);
          for (int64_t dy = 0; dy < scale; ++dy)
            for (int64_t dx = 0; dx < scale; ++dx) fill(y0 + i * scale + dy, x0 + j * scale + dx, rgb);
        }
    }
  }

  // The colour bar: 1 at the top, kHeatmapMinMass at the bottom, a tick label at each decade.
  const double decades = -std::log10(kHeatmapMinMass);
  for (int64_t y = 0; y < bar_h; ++y) {
    const double mass = std::pow(10.0, -decades * static_cast<double>(y) / static_cast<double>(bar_h - 1));
    for (int64_t x = 0; x < kBarWidth; ++x) fill(top + y, bar_x + x, heat_colour(mass));
  }
  for (int d = 0; d <= static_cast<int>(decades); ++d) {
    const int64_t y = top + static_cast<int64_t>(std::lround(d / decades * static_cast<double>(bar_h - 1)));
    const std::string label = d == 0 ? "1" : d == 1 ? "0.1" : d == 2 ? "0.01" : "1E-" + std::to_string(d);
    draw_text(image, bar_x + kBarWidth + kGap, std::clamp<int64_t>(y - 5 * kFontScale / 2, top, top + bar_h - 5 * kFontScale),
              label, kFontScale, kInk);
  }
  return image;
}

}  // namespace ditkit
