#include "pipelines/charts.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "pipelines/bitmap_font.h"

namespace ditkit {

namespace {

using Rgb = std::array<uint8_t, 3>;
constexpr Rgb kInk{40, 40, 40}, kGrid{225, 225, 225}, kSeries{31, 119, 180};
constexpr int64_t kFontScale = 2;
// The plot area inside the chart: room for the title above, tick labels left, axis label below.
constexpr int64_t kLeft = 72, kRight = kChartWidth - 16, kTop = 36, kBottom = kChartHeight - 44;
constexpr int kYTicks = 5;

// A chart's canvas and the value -> pixel mapping of its axes.
class Canvas {
 public:
  Canvas(double x_max, double y_min, double y_max)
      : image_(at::full({kChartHeight, kChartWidth, 3}, 255, at::kByte)),
        px_(image_.accessor<uint8_t, 3>()),
        x_max_(x_max),
        y_min_(y_min),
        y_max_(y_max) {}

  double x(double v) const { return kLeft + (kRight - kLeft) * (x_max_ > 0 ? v / x_max_ : 0.5); }
  double y(double v) const { return kBottom - (kBottom - kTop) * (v - y_min_) / (y_max_ - y_min_); }

  void fill(int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c) {
    for (int64_t r = std::max<int64_t>(y0, 0); r < std::min(y1, kChartHeight); ++r)
      for (int64_t col = std::max<int64_t>(x0, 0); col < std::min(x1, kChartWidth); ++col)
        for (int i = 0; i < 3; ++i) px_[r][col][i] = c[i];
  }
  // A 2-pixel-wide segment, stepped one pixel at a time along its longer axis.
  void line(double x0, double y0, double x1, double y1, Rgb c) {
    const int64_t n = std::max<int64_t>(1, std::lround(std::max(std::abs(x1 - x0), std::abs(y1 - y0))));
    for (int64_t i = 0; i <= n; ++i) {
      const double t = double(i) / double(n);
      const int64_t px = std::lround(x0 + t * (x1 - x0)), py = std::lround(y0 + t * (y1 - y0));
      fill(px, py, px + 2, py + 2, c);
    }
  }
  void dot(double cx, double cy, Rgb c, bool hollow) {
    const int64_t x0 = std::lround(cx) - 3, y0 = std::lround(cy) - 3;
    fill(x0, y0, x0 + 7, y0 + 7, c);
    if (hollow) fill(x0 + 2, y0 + 2, x0 + 5, y0 + 5, {255, 255, 255});
  }
  void text(int64_t x0, int64_t y0, const std::string& s) { draw_text(image_, x0, y0, s, kFontScale, kInk); }

  // Axes, horizontal grid lines with y tick labels, at most ~10 labelled x ticks (between
  // values for bars), title and axis labels.
  void frame(const ChartLabels& labels, int64_t count, bool ticks_between) {
    for (int i = 0; i <= kYTicks; ++i) {
      const double v = y_min_ + (y_max_ - y_min_) * i / kYTicks;
      const int64_t py = std::lround(y(v));
      fill(kLeft, py, kRight, py + 1, kGrid);
      const std::string s = number(v);
      text(kLeft - 6 - text_width(s, kFontScale), py - kGlyphCellHeight * kFontScale / 2, s);
    }
    fill(kLeft, kTop, kLeft + 2, kBottom + 1, kInk);
    fill(kLeft, kBottom, kRight, kBottom + 2, kInk);
    const int64_t step = std::max<int64_t>(1, (count + 9) / 10);  // at most ~10 x labels
    for (int64_t i = 0; i < count; i += step) {
      const int64_t px = std::lround(x(ticks_between ? i + 0.5 : i));
      fill(px, kBottom, px + 2, kBottom + 6, kInk);
      const std::string s = std::to_string(i);
      text(px - text_width(s, kFontScale) / 2, kBottom + 9, s);
    }
    text((kChartWidth - text_width(labels.title, kFontScale)) / 2, 10, labels.title);
    text((kLeft + kRight - text_width(labels.x_label, kFontScale)) / 2, kChartHeight - 16, labels.x_label);
    text(8, 10, labels.y_label);
  }

  at::Tensor image() const { return image_; }

 private:
  static std::string number(double v) {
    char s[32];
    std::snprintf(s, sizeof(s), "%.3g", std::abs(v) < 1e-12 ? 0.0 : v);
    return s;
  }

  at::Tensor image_;
  at::TensorAccessor<uint8_t, 3> px_;
  double x_max_, y_min_, y_max_;
};

// A y range with a little room around [lo, hi], and some height when they are equal.
std::pair<double, double> padded(double lo, double hi) {
  if (hi - lo < 1e-12) return {lo - 1, hi + 1};
  const double pad = 0.08 * (hi - lo);
  return {lo - pad, hi + pad};
}

}  // namespace

at::Tensor draw_line_chart(const std::vector<double>& values, const ChartLabels& labels) {
  if (values.empty()) throw std::invalid_argument("draw_line_chart: no values");
  double lo = INFINITY, hi = -INFINITY;
  bool any_infinite = false;
  for (double v : values) {
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    } else {
      any_infinite = true;
    }
  }
  if (!std::isfinite(lo)) lo = hi = 0;  // nothing finite: every value sits on the top edge
  const auto [y_min, y_max] = padded(lo, hi);
  Canvas c(static_cast<double>(values.size() - 1), y_min, y_max);
  ChartLabels l = labels;
  if (any_infinite) l.title += " (hollow at top: inf)";
  c.frame(l, static_cast<int64_t>(values.size()), false);
  auto point_y = [&](double v) { return std::isfinite(v) ? c.y(v) : double(kTop); };
  for (size_t i = 1; i < values.size(); ++i)
    c.line(c.x(double(i - 1)), point_y(values[i - 1]), c.x(double(i)), point_y(values[i]), kSeries);
  for (size_t i = 0; i < values.size(); ++i) c.dot(c.x(double(i)), point_y(values[i]), kSeries, !std::isfinite(values[i]));
  return c.image();
}

at::Tensor draw_bar_chart(const std::vector<double>& values, const ChartLabels& labels) {
  if (values.empty()) throw std::invalid_argument("draw_bar_chart: no values");
  double hi = 0;
  for (double v : values) {
    if (!std::isfinite(v) || v < 0) throw std::invalid_argument("draw_bar_chart: values must be finite and >= 0");
    hi = std::max(hi, v);
  }
  Canvas c(static_cast<double>(values.size()), 0, hi > 0 ? hi * 1.08 : 1);
  c.frame(labels, static_cast<int64_t>(values.size()), true);
  const double slot = c.x(1) - c.x(0);
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t x0 = std::lround(c.x(double(i)) + 0.15 * slot), x1 = std::lround(c.x(double(i + 1)) - 0.15 * slot);
    c.fill(x0, std::lround(c.y(values[i])), std::max(x1, x0 + 1), kBottom, kSeries);
  }
  return c.image();
}

}  // namespace ditkit
