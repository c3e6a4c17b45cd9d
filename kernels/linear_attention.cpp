#include "kernels/linear_attention.h"

#include <ATen/ATen.h>

namespace ditkit {

namespace {

void check_linear_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "linear_attention: q, k, v must be [B, S, H, D]");
  TORCH_CHECK(k.sizes().slice(0, 3) == v.sizes().slice(0, 3),
              "linear_attention: k ", k.sizes(), " and v ", v.sizes(), " differ in [B, S, H]");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "linear_attention: q ", q.sizes(), " and k ", k.sizes(), " differ in batch, heads or head dim");
}

}  // namespace

at::Tensor softmax_feature_map(const at::Tensor& x, at::ScalarType dtype) { return at::softmax(x.to(dtype), -1); }

at::Tensor linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_linear_args(q, k, v);
  at::Tensor fq = softmax_feature_map(q);
  at::Tensor fk = softmax_feature_map(k);
  at::Tensor kv = at::einsum("bshd,bshe->bhde", {fk, v.to(at::kFloat)});
  at::Tensor z = fk.sum(1);                                       // [B, H, D]
  at::Tensor num = at::einsum("bshd,bhde->bshe", {fq, kv});
  at::Tensor den = at::einsum("bshd,bhd->bsh", {fq, z}).unsqueeze(-1);
  return (num / den).to(q.scalar_type());
}

at::Tensor linear_attention_reference(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in) {
  check_linear_args(q_in, k_in, v_in);
  at::Tensor fq = softmax_feature_map(q_in.to(at::kCPU), at::kDouble).contiguous();
  at::Tensor fk = softmax_feature_map(k_in.to(at::kCPU), at::kDouble).contiguous();
  at::Tensor v = v_in.to(at::kCPU, at::kDouble).contiguous();
  const int64_t B = fq.size(0), SQ = fq.size(1), SK = fk.size(1), H = fq.size(2), D = fq.size(3), E = v.size(3);
  at::Tensor out = at::zeros({B, SQ, H, E}, at::kDouble);
  auto qa = fq.accessor<double, 4>();
  auto ka = fk.accessor<double, 4>();
  auto va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < SQ; ++i) {
        double den = 0;
        for (int64_t j = 0; j < SK; ++j) {
          double w = 0;
          for (int64_t d = 0; d < D; ++d) w += qa[b][i][h][d] * ka[b][j][h][d];
          den += w;
          for (int64_t e = 0; e < E; ++e) oa[b][i][h][e] += w * va[b][j][h][e];
        }
        for (int64_t e = 0; e < E; ++e) oa[b][i][h][e] /= den;
      }
  return out.to(q_in.scalar_type());
}

}  // namespace ditkit
