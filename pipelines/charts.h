// Line and bar charts the project draws itself (dit-ab's per-frame PSNR and per-layer attention
// error), with ATen and pipelines/bitmap_font.h labels, so reports need no plotting library;
// written with pipelines/png.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ditkit {

// Every chart is this size, whatever the number of values, so reports lay out the same.
constexpr int64_t kChartWidth = 640, kChartHeight = 320;

struct ChartLabels {
  std::string title, x_label, y_label;
};

// values[i] at x = i, joined by a line with a dot at each value; the y axis spans the finite
// values. Non-finite values (PSNR of identical frames is +inf) are drawn as hollow dots on the top
// edge and the title says so. -> uint8 [kChartHeight, kChartWidth, 3] on the CPU.
at::Tensor draw_line_chart(const std::vector<double>& values, const ChartLabels& labels);

// One bar per value from 0 (values must be finite and >= 0). -> uint8 [kChartHeight, kChartWidth, 3].
at::Tensor draw_bar_chart(const std::vector<double>& values, const ChartLabels& labels);

}  // namespace ditkit
