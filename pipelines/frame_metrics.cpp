#include "pipelines/frame_metrics.h"

#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "pipelines/video_writer.h"

namespace ditkit {
namespace {

constexpr int64_t kWindow = 11;
constexpr double kSigma = 1.5;
constexpr double kC1 = (0.01 * 255) * (0.01 * 255), kC2 = (0.03 * 255) * (0.03 * 255);

double psnr_from_mse(double mse) {
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
}

// Gaussian-weighted means over every window that lies inside the frame, for each of a batch of
// float64 images [N, H, W]. The 2-D window is g g^T, so two 1-D passes of shifted adds do it,
// ~8x faster on the CPU than ATen's float64 conv2d.
at::Tensor window_means(const at::Tensor& images, const std::vector<double>& g) {
  auto pass = [&](const at::Tensor& t, int64_t dim) {
    const int64_t n = t.size(dim) - kWindow + 1;
    at::Tensor out = g[0] * t.narrow(dim, 0, n);
    for (int64_t k = 1; k < kWindow; ++k) out.add_(t.narrow(dim, k, n), g[k]);
    return out;
  };
  return pass(pass(images, 2), 1);
}

// x, y: float64 [H, W] luma.
double ssim(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& g) {
  auto m = window_means(at::stack({x, y, x * x, y * y, x * y}), g).unbind(0);
  at::Tensor mu_xy = m[0] * m[1], mu_xx = m[0] * m[0], mu_yy = m[1] * m[1];
  at::Tensor map = (2 * mu_xy + kC1) * (2 * (m[4] - mu_xy) + kC2) /
                   ((mu_xx + mu_yy + kC1) * ((m[2] - mu_xx) + (m[3] - mu_yy) + kC2));
  return map.mean().item<double>();
}

}  // namespace

FrameMetrics compare_videos(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor va = contiguous_rgb(a, 4, "compare_videos"), vb = contiguous_rgb(b, 4, "compare_videos");
  if (!va.sizes().equals(vb.sizes())) {
    std::ostringstream msg;
    msg << "compare_videos: the videos differ in shape: " << va.sizes() << " vs " << vb.sizes();
    throw std::invalid_argument(msg.str());
  }
  if (va.size(1) < kWindow || va.size(2) < kWindow)
    throw std::invalid_argument("compare_videos: SSIM needs frames of at least 11x11 pixels");

  const at::Tensor luma_weights = at::tensor({0.299, 0.587, 0.114}, at::kDouble);
  std::vector<double> g(kWindow);
  for (int64_t k = 0; k < kWindow; ++k) g[k] = std::exp(-std::pow(k - kWindow / 2, 2) / (2 * kSigma * kSigma));
  const double total = std::accumulate(g.begin(), g.end(), 0.0);
  for (double& w : g) w /= total;

  FrameMetrics out;
  double mse_sum = 0, ssim_sum = 0;
  for (int64_t t = 0; t < va.size(0); ++t) {  // a frame at a time keeps float64 copies small
    at::Tensor fa = va[t].to(at::kDouble), fb = vb[t].to(at::kDouble);
    double mse = (fa - fb).square().mean().item<double>();  // exact: sums of integers below 2^53
    out.psnr.push_back(psnr_from_mse(mse));
    out.ssim.push_back(ssim(fa.matmul(luma_weights), fb.matmul(luma_weights), g));
    mse_sum += mse;
    ssim_sum += out.ssim.back();
  }
  out.mean_psnr = psnr_from_mse(mse_sum / va.size(0));
  out.mean_ssim = ssim_sum / va.size(0);
  return out;
}

}  // namespace ditkit
