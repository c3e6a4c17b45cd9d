#include "kernels/block_scores.h"

#include <ATen/ATen.h>

namespace ditkit {

namespace {

void check_scores_args(const at::Tensor& qp, const at::Tensor& kp) {
  TORCH_CHECK(qp.dim() == 4 && kp.dim() == 4, "block_scores: pooled q and k must be [B, N, H, D]");
  TORCH_CHECK(qp.size(0) == kp.size(0) && qp.size(2) == kp.size(2) && qp.size(3) == kp.size(3),
              "block_scores: q ", qp.sizes(), " and k ", kp.sizes(), " differ in batch, heads or head dim");
}

}  // namespace

at::Tensor block_scores(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale) {
  check_scores_args(q_pooled, k_pooled);
  at::Tensor q = q_pooled.transpose(1, 2).to(at::kFloat);  // [B, H, NQ, D]
  at::Tensor k = k_pooled.transpose(1, 2).to(at::kFloat);  // [B, H, NK, D]
  return at::matmul(q, k.transpose(-1, -2)).mul_(scale);
}

at::Tensor block_scores_reference(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale) {
  check_scores_args(q_pooled, k_pooled);
  at::Tensor q = q_pooled.to(at::kCPU, at::kDouble).contiguous();
  at::Tensor k = k_pooled.to(at::kCPU, at::kDouble).contiguous();
  const int64_t B = q.size(0), NQ = q.size(1), NK = k.size(1), H = q.size(2), D = q.size(3);
  at::Tensor out = at::empty({B, H, NQ, NK}, at::kDouble);
  auto qa = q.accessor<double, 4>();
  auto ka = k.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i)
        for (int64_t j = 0; j < NK; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][i][h][d] * ka[b][j][h][d];
          oa[b][h][i][j] = dot * scale;
        }
  return out;
}

}  // namespace ditkit
