#include "sparse/plan.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "kernels/complement_linear_attention.h"
#include "kernels/dense_attention.h"
#include "kernels/token_permute.h"

namespace ditkit {

at::Tensor Plan::density(at::Device device) const {
  if (dense) return at::ones({}, at::dtype(at::kFloat).device(device));
  return csr_block_density(csr);
}

namespace {

bool records_grad(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& projection) {
  return c10::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                                        (projection.defined() && projection.requires_grad()));
}

// Both branches over tokens in the plan's order.
AttentionOutput run_branches(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan,
                             bool grad) {
  const at::Tensor& w = plan.linear_projection;
  // Inference: in q's dtype, onto the softmax output (in place, or in its kernel, on the GPU).
  if (w.defined() && !grad) return sparse_linear_attention(q, k, v, plan.csr, plan.blocks, w, plan.fuse_linear);
  AttentionOutput r = grad ? block_sparse_attention_autograd(q, k, v, plan.csr, plan.blocks)
                           : block_sparse_attention(q, k, v, plan.csr, plan.blocks);
  if (w.defined()) {
    // Training applies the projection in fp32 (SLA keeps it there); the sum is rounded once.
    at::Tensor linear = complement_linear_attention(q, k, v, plan.csr, plan.blocks);
    at::Tensor projected = at::matmul(linear.to(w.scalar_type()), w.t());
    r.out = (r.out.to(projected.scalar_type()) + projected).to(q.scalar_type());
  }
  return r;
}

}  // namespace

AttentionOutput execute_plan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan) {
  const bool grad = records_grad(q, k, v, plan.linear_projection);
  if (plan.dense)
    return !grad && block_sparse_attention_uses_kernel(q, k, v, {128, 128}) ? full_attention_kernel(q, k, v)
                                                                            : dense_attention(q, k, v);
  if (!plan.permutation.defined()) return run_branches(q, k, v, plan, grad);
  const at::Tensor& perm = plan.permutation;
  return restore_token_order(
      run_branches(permute_tokens(q, perm), permute_tokens(k, perm), permute_tokens(v, perm), plan, grad),
      plan.inverse_permutation);
}

AttentionOutput restore_token_order(AttentionOutput r, const at::Tensor& inverse_permutation) {
  r.out = permute_tokens(r.out, inverse_permutation);
  // lse [B, H, S] follows the tokens too: move it through the same [B, S, H, 1] layout.
  if (r.lse.defined())
    r.lse = permute_tokens(r.lse.transpose(1, 2).unsqueeze(-1), inverse_permutation).squeeze(-1).transpose(1, 2);
  return r;
}

}  // namespace ditkit
