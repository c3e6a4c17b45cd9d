#include "kernels/dense_attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>

namespace ditkit {

const char* dense_attention_backend(const at::Tensor& q) {
  if (!q.is_cuda()) return "cpu-flash";
  const int64_t D = q.size(-1);
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  return half && D % 8 == 0 && D <= 128 ? "cudnn" : "efficient";
}

AttentionOutput dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "dense_attention: q, k, v must share one [B, S, H, D] shape, got ", q.sizes(), " ", k.sizes(), " ",
              v.sizes());
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  if (q.is_cuda() && q.size(3) % 8 != 0) {
    // The GPU kernels need the head dim in multiples of 8. Zero channels add nothing to q·k or
    // to the output, and the scale is already fixed from the true head dim, so padding is exact.
    const int64_t pad = 8 - q.size(3) % 8;
    AttentionOutput r = dense_attention(at::constant_pad_nd(q, {0, pad}), at::constant_pad_nd(k, {0, pad}),
                                        at::constant_pad_nd(v, {0, pad}), scale);
    return {r.out.narrow(3, 0, q.size(3)), r.lse};
  }
  // The kernels take [B, H, S, D]; transposed views of [B, S, H, D] need no copy.
  at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  at::Tensor out, lse;
  const char* backend = dense_attention_backend(q);
  if (std::strcmp(backend, "cudnn") == 0) {
    auto result = at::_scaled_dot_product_cudnn_attention(qt, kt, vt, std::nullopt, /*compute_log_sumexp=*/true,
                                                          0.0, false, false, scale);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  } else if (std::strcmp(backend, "efficient") == 0) {
    auto result = at::_scaled_dot_product_efficient_attention(qt, kt, vt, std::nullopt, /*compute_log_sumexp=*/true,
                                                              0.0, false, scale);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  } else {
    auto result = at::_scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, 0.0, false, std::nullopt, scale);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  }
  // Some kernels pad the lse along S (the efficient kernel to a multiple of 32) or add a unit dim.
  lse = lse.reshape({B, H, -1}).narrow(2, 0, S).to(at::kFloat);
  return {out.transpose(1, 2), lse};
}

}  // namespace ditkit
