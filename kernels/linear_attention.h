// Non-causal linear attention with a softmax feature map over the head dimension:
//   out_i = Σ_j (φ(q_i)·φ(k_j)) v_j / Σ_j (φ(q_i)·φ(k_j)),  φ(x) = softmax(x) over D.
// The sparse-linear hybrid (SLA) runs it on the blocks its softmax branch skips.
#pragma once

#include <ATen/core/Tensor.h>

namespace ditkit {

// φ(x) = softmax(x) over the head dimension (the last), computed and returned in `dtype`: the
// feature map of every linear branch here.
at::Tensor softmax_feature_map(const at::Tensor& x, at::ScalarType dtype = at::kFloat);

// q, k, v [B, S, H, D] -> [B, S, H, D] in q's dtype; computed in fp32 as φ(q)(φ(k)ᵀV) with the
// normaliser φ(q)·Σφ(k), so the cost is linear in S.
at::Tensor linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// The oracle: the quadratic form above with explicit loops, fp64, on the CPU.
at::Tensor linear_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace ditkit
