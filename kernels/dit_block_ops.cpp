#include "kernels/dit_block_ops.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <initializer_list>
#include <optional>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda_element_type.h"
#include "kernels/dit_block_ops_cuda.h"
#endif

namespace ditkit {

at::Tensor modulated_layer_norm_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                          const at::Tensor& scale, const at::Tensor& shift, double eps) {
  at::Tensor y = at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight, bias, eps);
  if (scale.defined()) y = y * (1 + scale) + shift;
  return y.to(x.scalar_type());
}

at::Tensor gated_residual_reference(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  return (x.to(at::kFloat) + (gate.defined() ? y * gate : y.to(at::kFloat))).to(x.scalar_type());
}

at::Tensor rms_norm_rope_reference(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t heads,
                                   const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor normed = at::rms_norm(x, {x.size(-1)}, weight, eps).unflatten(-1, {heads, -1});
  if (!cos.defined()) return normed;
  // diffusers' WanAttnProcessor rotary step: fp32 arithmetic, one rounding to x's dtype.
  at::Tensor pairs = normed.unflatten(-1, {-1, 2});
  at::Tensor x1 = pairs.select(-1, 0), x2 = pairs.select(-1, 1);
  return at::stack({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1).flatten(-2).to(x.scalar_type());
}

at::Tensor linear_gelu_tanh_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return at::gelu(at::linear(x, weight, bias), "tanh");
}

namespace {

// The fused kernels build no autograd graph, so they step aside while one is being recorded.
bool recording_grad(std::initializer_list<at::Tensor> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor& t : tensors)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

#if DITKIT_HAVE_CUDA
bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// Rows [B, S, C] the row kernels can take: contiguous, 16-byte aligned, C whole vectors that fit a CTA.
bool fusable_rows(const at::Tensor& x) {
  if (!x.is_cuda() || x.dim() != 3 || !x.is_contiguous() || !cuda::element_type_of(x.scalar_type()) || !aligned16(x))
    return false;
  const int64_t per_vec = 16 / int64_t(x.element_size()), C = x.size(2);
  return C % per_vec == 0 && C / per_vec <= int64_t(cuda::kRowThreadsMax) * cuda::kRowVecsPerThread;
}

// An fp32 [C] vector on x's device, read by the kernels in aligned float4s.
bool channel_vector(const at::Tensor& t, const at::Tensor& x) {
  return t.scalar_type() == at::kFloat && t.device() == x.device() && t.dim() == 1 && t.size(0) == x.size(2) &&
         t.is_contiguous() && aligned16(t);
}

// An fp32 [B or 1, 1, C] per-batch vector on x's device with unit stride along C, read in
// aligned float4s; its batch stride.
std::optional<int64_t> batch_vector_stride(const at::Tensor& t, const at::Tensor& x) {
  if (t.scalar_type() != at::kFloat || t.device() != x.device() || t.dim() != 3 || t.size(1) != 1 ||
      t.size(2) != x.size(2) || t.stride(2) != 1 || (t.size(0) != x.size(0) && t.size(0) != 1) || !aligned16(t))
    return std::nullopt;
  if (t.size(0) == 1) return 0;
  if (t.stride(0) % 4 != 0) return std::nullopt;
  return t.stride(0);
}

cuda::RowShape row_shape(const at::Tensor& x) { return {x.size(0) * x.size(1), x.size(2), x.size(1)}; }

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}
#endif

}  // namespace

bool modulated_layer_norm_fuses(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& scale, const at::Tensor& shift) {
#if DITKIT_HAVE_CUDA
  if (recording_grad({x, weight, bias, scale, shift}) || !fusable_rows(x)) return false;
  if (weight.defined() && !(channel_vector(weight, x) && channel_vector(bias, x))) return false;
  if (!scale.defined()) return true;
  const std::optional<int64_t> stride = batch_vector_stride(scale, x);
  return stride && batch_vector_stride(shift, x) == stride;  // one stride serves both
#else
  return false;
#endif
}

at::Tensor modulated_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& scale, const at::Tensor& shift, double eps) {
  TORCH_CHECK(weight.defined() == bias.defined(), "modulated_layer_norm: weight and bias go together");
  TORCH_CHECK(scale.defined() == shift.defined(), "modulated_layer_norm: scale and shift go together");
#if DITKIT_HAVE_CUDA
  if (modulated_layer_norm_fuses(x, weight, bias, scale, shift)) {
    at::Tensor out = at::empty_like(x);
    c10::cuda::CUDAGuard guard(x.device());
    cuda::ModulatedLayerNormArgs args{x.data_ptr(),
                                      out.data_ptr(),
                                      *cuda::element_type_of(x.scalar_type()),
                                      row_shape(x),
                                      weight.defined() ? weight.data_ptr<float>() : nullptr,
                                      bias.defined() ? bias.data_ptr<float>() : nullptr,
                                      scale.defined() ? scale.data_ptr<float>() : nullptr,
                                      shift.defined() ? shift.data_ptr<float>() : nullptr,
                                      scale.defined() ? *batch_vector_stride(scale, x) : 0,
                                      float(eps)};
    check_launch(cuda::launch_modulated_layer_norm(args, c10::cuda::getCurrentCUDAStream()), "modulated_layer_norm");
    return out;
  }
#endif
  return modulated_layer_norm_reference(x, weight, bias, scale, shift, eps);
}

bool gated_residual_fuses(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
#if DITKIT_HAVE_CUDA
  return !recording_grad({x, y, gate}) && fusable_rows(x) && y.sizes() == x.sizes() &&
         y.scalar_type() == x.scalar_type() && y.device() == x.device() && y.is_contiguous() && aligned16(y) &&
         (!gate.defined() || batch_vector_stride(gate, x));
#else
  return false;
#endif
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  TORCH_CHECK(x.sizes() == y.sizes(), "gated_residual: x ", x.sizes(), " and y ", y.sizes(), " differ");
#if DITKIT_HAVE_CUDA
  if (gated_residual_fuses(x, y, gate)) {
    at::Tensor out = at::empty_like(x);
    c10::cuda::CUDAGuard guard(x.device());
    cuda::GatedResidualArgs args{x.data_ptr(),  y.data_ptr(), out.data_ptr(), *cuda::element_type_of(x.scalar_type()),
                                 row_shape(x), gate.defined() ? gate.data_ptr<float>() : nullptr,
                                 gate.defined() ? *batch_vector_stride(gate, x) : 0};
    check_launch(cuda::launch_gated_residual(args, c10::cuda::getCurrentCUDAStream()), "gated_residual");
    return out;
  }
#endif
  return gated_residual_reference(x, y, gate);
}

bool rms_norm_rope_fuses(const at::Tensor& x, const at::Tensor& weight, int64_t heads, const at::Tensor& cos,
                         const at::Tensor& sin) {
#if DITKIT_HAVE_CUDA
  if (recording_grad({x, weight}) || !fusable_rows(x) || heads <= 0 || x.size(2) % heads != 0) return false;
  const int64_t D = x.size(2) / heads;
  const auto table = [&](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat && t.device() == x.device() && t.is_contiguous() && aligned16(t) &&
           t.numel() == x.size(1) * (D / 2);
  };
  // A 16-byte vector of x must hold whole pairs of one head, whose angles are then adjacent.
  return D % (16 / int64_t(x.element_size())) == 0 && weight.scalar_type() == x.scalar_type() &&
         weight.device() == x.device() && weight.is_contiguous() && aligned16(weight) && weight.numel() == x.size(2) &&
         (!cos.defined() || (table(cos) && table(sin)));
#else
  return false;
#endif
}

at::Tensor rms_norm_rope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t heads,
                         const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(heads > 0 && x.size(-1) % heads == 0, "rms_norm_rope: ", x.size(-1), " channels do not split into ",
              heads, " heads");
  TORCH_CHECK(cos.defined() == sin.defined(), "rms_norm_rope: cos and sin go together");
#if DITKIT_HAVE_CUDA
  if (rms_norm_rope_fuses(x, weight, heads, cos, sin)) {
    const int64_t D = x.size(2) / heads;
    at::Tensor out = at::empty({x.size(0), x.size(1), heads, D}, x.options());
    c10::cuda::CUDAGuard guard(x.device());
    cuda::RmsNormRopeArgs args{x.data_ptr(),
                               out.data_ptr(),
                               *cuda::element_type_of(x.scalar_type()),
                               row_shape(x),
                               weight.data_ptr(),
                               cos.defined() ? cos.data_ptr<float>() : nullptr,
                               sin.defined() ? sin.data_ptr<float>() : nullptr,
                               D,
                               float(eps)};
    check_launch(cuda::launch_rms_norm_rope(args, c10::cuda::getCurrentCUDAStream()), "rms_norm_rope");
    return out;
  }
#endif
  return rms_norm_rope_reference(x, weight, eps, heads, cos, sin);
}

at::Tensor linear_gelu_tanh(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // cuBLASLt applies the bias and GELU (the tanh form) in the GEMM's epilogue: the wide hidden
  // activation is written once instead of three times. It has no autograd formula.
  if (x.is_cuda() && !recording_grad({x, weight, bias}) && bias.defined() && bias.dim() == 1 &&
      x.scalar_type() == weight.scalar_type() && bias.scalar_type() == x.scalar_type()) {
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = weight.size(0);
    return at::_addmm_activation(bias, x.reshape({-1, x.size(-1)}), weight.t(), 1, 1, /*use_gelu=*/true)
        .view(out_shape);
  }
  return linear_gelu_tanh_reference(x, weight, bias);
}

}  // namespace ditkit
