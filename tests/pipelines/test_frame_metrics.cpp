#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "pipelines/frame_metrics.h"

namespace ditkit {
namespace {

const double kC1 = std::pow(0.01 * 255, 2), kC2 = std::pow(0.03 * 255, 2);

at::Tensor make_video(int64_t frames, int64_t height, int64_t width,
                      const std::function<int(int64_t t, int64_t y, int64_t x, int64_t c)>& value) {
  at::Tensor v = at::empty({frames, height, width, 3}, at::kByte);
  auto a = v.accessor<uint8_t, 4>();
  for (int64_t t = 0; t < frames; ++t)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x)
        for (int64_t c = 0; c < 3; ++c) a[t][y][x][c] = static_cast<uint8_t>(value(t, y, x, c));
  return v;
}

// Smooth texture in 30..226, with structure at several scales so shifts and offsets show.
int texture(int64_t y, int64_t x, int64_t c) {
  return static_cast<int>(std::lround(128 + 50 * std::sin(0.37 * x + 0.5 * c) * std::cos(0.23 * y) +
                                      48 * std::sin(0.11 * (x + 2 * y) + c)));
}

double psnr(double mse) { return 10 * std::log10(255.0 * 255.0 / mse); }

// SSIM of one frame written out as the definition reads: per window, weighted means, then
// weighted (co)variances about those means, with the 2-D Gaussian built directly.
double direct_ssim(const at::Tensor& rgb_a, const at::Tensor& rgb_b) {
  const int64_t h = rgb_a.size(0), w = rgb_a.size(1);
  auto luma = [](const at::Tensor& rgb) {
    auto p = rgb.accessor<uint8_t, 3>();
    std::vector<std::vector<double>> y(rgb.size(0), std::vector<double>(rgb.size(1)));
    for (int64_t r = 0; r < rgb.size(0); ++r)
      for (int64_t c = 0; c < rgb.size(1); ++c) y[r][c] = 0.299 * p[r][c][0] + 0.587 * p[r][c][1] + 0.114 * p[r][c][2];
    return y;
  };
  auto a = luma(rgb_a), b = luma(rgb_b);
  double win[11][11], total = 0;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) total += win[i][j] = std::exp(-((i - 5) * (i - 5) + (j - 5) * (j - 5)) / (2 * 1.5 * 1.5));
  for (auto& row : win)
    for (double& v : row) v /= total;
  double sum = 0;
  int64_t count = 0;
  for (int64_t r = 0; r + 11 <= h; ++r)
    for (int64_t c = 0; c + 11 <= w; ++c) {
      double ma = 0, mb = 0, va = 0, vb = 0, cov = 0;
      for (int i = 0; i < 11; ++i)
        for (int j = 0; j < 11; ++j) ma += win[i][j] * a[r + i][c + j], mb += win[i][j] * b[r + i][c + j];
      for (int i = 0; i < 11; ++i)
        for (int j = 0; j < 11; ++j) {
          double da = a[r + i][c + j] - ma, db = b[r + i][c + j] - mb;
          va += win[i][j] * da * da, vb += win[i][j] * db * db, cov += win[i][j] * da * db;
        }
      sum += (2 * ma * mb + kC1) * (2 * cov + kC2) / ((ma * ma + mb * mb + kC1) * (va + vb + kC2));
      ++count;
    }
  return sum / count;
}

TEST(FrameMetrics, IdenticalFramesGiveInfinitePsnrAndSsimOne) {
  at::Tensor v = make_video(2, 16, 20, [](auto, auto y, auto x, auto c) { return texture(y, x, c); });
  FrameMetrics m = compare_videos(v, v.clone());
  ASSERT_EQ(m.psnr.size(), 2u);
  for (int t = 0; t < 2; ++t) {
    EXPECT_EQ(m.psnr[t], std::numeric_limits<double>::infinity());
    EXPECT_DOUBLE_EQ(m.ssim[t], 1.0);
  }
  EXPECT_EQ(m.mean_psnr, std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(m.mean_ssim, 1.0);
}

TEST(FrameMetrics, PsnrMatchesClosedFormForKnownNoise) {
  // Frame t adds +-k[t] to the pixels where noise() is nonzero, so MSE = k^2 * nonzero / total.
  const int k[3] = {1, 3, 10};
  auto noise = [](int64_t y, int64_t x, int64_t c) { return (x + y + c) % 4 == 0 ? 0 : ((x + 2 * y + c) % 2 ? 1 : -1); };
  const int64_t h = 30, w = 40;
  at::Tensor a = make_video(3, h, w, [](auto, auto y, auto x, auto c) { return texture(y, x, c); });
  at::Tensor b = make_video(3, h, w, [&](auto t, auto y, auto x, auto c) { return texture(y, x, c) + k[t] * noise(y, x, c); });
  int64_t nonzero = 0;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) nonzero += noise(y, x, c) != 0;
  const double total = h * w * 3;

  FrameMetrics m = compare_videos(a, b);
  double mse_sum = 0;
  for (int t = 0; t < 3; ++t) {
    double mse = k[t] * k[t] * nonzero / total;
    EXPECT_NEAR(m.psnr[t], psnr(mse), 1e-9) << "frame " << t;
    EXPECT_LT(m.ssim[t], 1.0);
    mse_sum += mse;
  }
  EXPECT_NEAR(m.mean_psnr, psnr(mse_sum / 3), 1e-9);  // from the mean MSE, not the mean of dB values
  EXPECT_GT(m.ssim[0], m.ssim[1]);
  EXPECT_GT(m.ssim[1], m.ssim[2]);
}

TEST(FrameMetrics, ConstantOffset) {
  // Frame 0 is flat, where SSIM reduces to its luminance term; frame 1 is textured.
  const int v = 100, d = 20;
  at::Tensor a = make_video(2, 24, 24, [&](auto t, auto y, auto x, auto c) { return t == 0 ? v : texture(y, x, c); });
  at::Tensor b = (a.to(at::kInt) + d).to(at::kByte);
  FrameMetrics m = compare_videos(a, b);
  EXPECT_NEAR(m.psnr[0], psnr(d * d), 1e-9);
  EXPECT_NEAR(m.psnr[1], psnr(d * d), 1e-9);
  const double mu_a = v, mu_b = v + d;
  EXPECT_NEAR(m.ssim[0], (2 * mu_a * mu_b + kC1) / (mu_a * mu_a + mu_b * mu_b + kC1), 1e-9);
  EXPECT_LT(m.ssim[1], 1.0);
  EXPECT_GT(m.ssim[1], 0.95);  // structure and contrast are untouched
}

TEST(FrameMetrics, SsimFallsAsTheShiftGrows) {
  at::Tensor big = make_video(1, 40, 60, [](auto, auto y, auto x, auto c) { return texture(y, x, c); });
  at::Tensor ref = big.narrow(2, 0, 50);
  double previous = 2;
  for (int shift = 0; shift <= 4; ++shift) {
    FrameMetrics m = compare_videos(ref, big.narrow(2, shift, 50));  // non-contiguous views
    SCOPED_TRACE("shift " + std::to_string(shift));
    if (shift == 0) {
      EXPECT_DOUBLE_EQ(m.ssim[0], 1.0);
    }
    EXPECT_LT(m.ssim[0], previous);
    previous = m.ssim[0];
  }
  EXPECT_LT(previous, 0.9);
}

TEST(FrameMetrics, SsimMatchesDirectLoop) {
  at::Tensor a = make_video(2, 23, 29, [](auto t, auto y, auto x, auto c) { return texture(y + t, x, c); });
  at::Tensor b = make_video(2, 23, 29, [](auto t, auto y, auto x, auto c) {
    return std::clamp<int64_t>(texture(y, x + 1, c) + ((x * 7 + y * 3 + c) % 5 - 2) * (t + 2), 0, 255);
  });
  FrameMetrics m = compare_videos(a, b);
  for (int t = 0; t < 2; ++t) {
    double expected = direct_ssim(a[t], b[t]);
    EXPECT_NEAR(m.ssim[t], expected, 1e-12) << "frame " << t;
    EXPECT_LT(expected, 0.99);  // a case where the terms matter
  }
  EXPECT_NEAR(m.mean_ssim, (m.ssim[0] + m.ssim[1]) / 2, 1e-15);
}

TEST(FrameMetrics, RejectsMismatchedOrInvalidInput) {
  at::Tensor a = at::zeros({2, 16, 16, 3}, at::kByte);
  auto error_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string msg = error_of([&] { compare_videos(a, at::zeros({2, 16, 17, 3}, at::kByte)); });
  EXPECT_NE(msg.find("differ in shape"), std::string::npos) << msg;
  msg = error_of([&] { compare_videos(a, a.to(at::kFloat)); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  msg = error_of([&] { compare_videos(a.narrow(1, 0, 10), a.narrow(1, 0, 10)); });
  EXPECT_NE(msg.find("11x11"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ditkit
