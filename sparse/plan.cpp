#include "sparse/plan.h"

#include <ATen/ATen.h>

#include "kernels/dense_attention.h"
#include "kernels/token_permute.h"

namespace ditkit {

at::Tensor Plan::density(at::Device device) const {
  if (dense) return at::ones({}, at::dtype(at::kFloat).device(device));
  return csr_block_density(csr);
}

AttentionOutput execute_plan(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan) {
  if (plan.dense)
    return block_sparse_attention_uses_kernel(q, k, v, {128, 128}) ? full_attention_kernel(q, k, v)
                                                                   : dense_attention(q, k, v);
  if (!plan.permutation.defined()) return block_sparse_attention(q, k, v, plan.csr, plan.blocks);
  const at::Tensor& perm = plan.permutation;
  AttentionOutput r = block_sparse_attention(permute_tokens(q, perm), permute_tokens(k, perm),
                                             permute_tokens(v, perm), plan.csr, plan.blocks);
  r.out = permute_tokens(r.out, plan.inverse_permutation);
  // lse [B, H, S] follows the tokens too: move it through the same [B, S, H, 1] layout.
  r.lse = permute_tokens(r.lse.transpose(1, 2).unsqueeze(-1), plan.inverse_permutation).squeeze(-1).transpose(1, 2);
  return r;
}

}  // namespace ditkit
