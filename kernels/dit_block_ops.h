// The DiT block's memory-bound steps, each fused into one pass over the token rows on the GPU:
// the AdaLN-modulated LayerNorm, the gated residual sum, RMSNorm across heads with RoPE, and the
// FFN's first projection with GELU (tanh) in the GEMM epilogue. Each rounds where the unfused
// diffusers sequence rounds, and its *_reference is that sequence in ATen ops (the oracle, the
// CPU path, and the path whenever autograd needs the graph: the fused kernels have no backward).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ditkit {

// Each *_fuses says whether these inputs take the fused GPU kernel (CUDA, outside autograd,
// contiguous 16-byte aligned rows that fit a CTA, and the op's own layout conditions); the op
// falls back to its reference otherwise. Tests use them to know the kernel, not the fallback, ran.

// x [B, S, C] -> LayerNorm over C in fp32, then `· weight + bias` (fp32 [C], both or neither
// defined), then `· (1 + scale) + shift` (fp32 [B, 1, C], both or neither), rounded to x's dtype.
at::Tensor modulated_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& scale, const at::Tensor& shift, double eps);
bool modulated_layer_norm_fuses(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& scale, const at::Tensor& shift);
at::Tensor modulated_layer_norm_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                          const at::Tensor& scale, const at::Tensor& shift, double eps);

// x, y [B, S, C] -> x + y · gate in fp32 (gate fp32 [B, 1, C]; undefined means 1), rounded to x's dtype.
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);
bool gated_residual_fuses(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);
at::Tensor gated_residual_reference(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);

// x [B, S, C] -> RMSNorm over all of C with `weight` [C] (x's dtype), split into heads
// [B, S, heads, C / heads], then channel pairs (2i, 2i+1) of each head rotated by the angles whose
// cos / sin (fp32 [1, S, 1, D/2]) are given; undefined cos / sin: no rotation.
at::Tensor rms_norm_rope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t heads,
                         const at::Tensor& cos, const at::Tensor& sin);
bool rms_norm_rope_fuses(const at::Tensor& x, const at::Tensor& weight, int64_t heads, const at::Tensor& cos,
                         const at::Tensor& sin);
at::Tensor rms_norm_rope_reference(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t heads,
                                   const at::Tensor& cos, const at::Tensor& sin);

// gelu_tanh(x · weightᵀ + bias), x [..., in], weight [out, in], bias [out].
at::Tensor linear_gelu_tanh(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
at::Tensor linear_gelu_tanh_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace ditkit
