// topk's block selection, for methods that select key blocks the same way over their own token
// order (paro does, over tokens it has reordered): the same parameters, the same checks, the same
// scores and selection.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "kernels/block_select.h"
#include "sparse/plan.h"
#include "sparse/recipe.h"

namespace ditkit {

struct TopkSelection {
  BlockShape blocks;
  BlockSelection selection;
};

// topk's parameters: k, mass, diag, first, qblock, kblock.
std::vector<ParamSpec> topk_params();

// Its `qblock` and `kblock` alone, for methods that plan through topk_block_csr with parameters of
// their own (sla), and the block shape a checked rule with them asks for.
std::vector<ParamSpec> topk_block_params();
BlockShape topk_block_shape(const RecipeRule& rule);

// The selection a checked rule with topk_params() asks for; RecipeError naming the rule's method
// when it keeps nothing (k = 0 and mass = 0).
TopkSelection topk_selection(const RecipeRule& rule);

// q, k [B, S, H, D] -> per query block the key blocks with the highest scores between block
// means (all on the tensors' device, no host synchronisation).
BlockCsr topk_block_csr(const at::Tensor& q, const at::Tensor& k, const TopkSelection& topk);

// The same from block means already taken (block_mean_pool of q and k, [B, NQ, H, D] and
// [B, NK, H, D]) of a sequence of `tokens` tokens.
BlockCsr topk_block_csr_from_means(const at::Tensor& q_means, const at::Tensor& k_means, int64_t tokens,
                                   const TopkSelection& topk);

}  // namespace ditkit
