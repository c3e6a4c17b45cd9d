// Per-frame PSNR and SSIM between two videos, for checking kernels and sparse attention against
// dense references on generated frames.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace ditkit {

struct FrameMetrics {
  // PSNR in dB over all pixels and channels: 10 log10(255^2 / MSE); +infinity for identical frames.
  std::vector<double> psnr;
  // SSIM on BT.601 luma (Y = 0.299 R + 0.587 G + 0.114 B, float64, not rounded) as Wang et al. 2004
  // and skimage (gaussian_weights=True, use_sample_covariance=False): 11x11 Gaussian window,
  // sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, averaged over the 'valid' region (windows that
  // lie wholly inside the frame), so frames must be at least 11x11.
  std::vector<double> ssim;
  // From the mean MSE over all frames, as FFmpeg's psnr filter reports its average: finite
  // unless every frame is identical, and not dominated by a few near-identical frames.
  double mean_psnr = 0;
  double mean_ssim = 0;  // the mean of the per-frame values
};

// a, b: uint8 [T, H, W, 3] RGB of equal shape.
FrameMetrics compare_videos(const at::Tensor& a, const at::Tensor& b);

}  // namespace ditkit
