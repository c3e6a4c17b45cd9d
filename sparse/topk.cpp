// `topk`: per query block, the key blocks with the highest scores between block means — a fixed
// number of them (k) or the fewest that cover a share of the estimated softmax mass — plus
// blocks always kept (the diagonal, the first blocks).
#include <ATen/ATen.h>

#include <cmath>

#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "sparse/method_registry.h"

namespace ditkit {

namespace {

class TopkMethod final : public AttentionMethod {
 public:
  TopkMethod(BlockShape blocks, BlockSelection selection) : blocks_(blocks), selection_(selection) {}
  std::string name() const override { return "topk"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext&) override {
    const int64_t S = q.size(1);
    BlockGeometry geometry{S, blocks_.q_block, blocks_.k_block};
    at::Tensor scores = block_scores(block_mean_pool(q, blocks_.q_block), block_mean_pool(k, blocks_.k_block),
                                     1.0 / std::sqrt(static_cast<double>(q.size(3))));
    Plan p;
    p.blocks = blocks_;
    p.csr = select_blocks_csr(scores, geometry, selection_);
    return p;
  }

 private:
  BlockShape blocks_;
  BlockSelection selection_;
};

}  // namespace

MethodEntry topk_method_entry() {
  using T = ParamSpec::Type;
  MethodSpec spec{
      "topk",
      {
          {"k", T::kInt, 0, 4096, {}, false, "0", "key blocks kept per query block (0: use mass)"},
          {"mass", T::kFloat, 0, 1, {}, false, "0.9", "share of the estimated softmax mass to keep when k=0"},
          {"diag", T::kInt, 0, 1, {}, false, "1", "1: always keep the blocks on the diagonal"},
          {"first", T::kInt, 0, 4096, {}, false, "0", "always keep this many leading key blocks"},
          {"kblock", T::kString, 0, 0, {"64", "128"}, false, "64", "key block size in tokens"},
      },
      "block-sparse attention on the top-scoring key blocks of each 128-token query block"};
  return {spec, [](const RecipeRule& rule) {
            BlockShape blocks{128, std::stoll(rule.string_param("kblock"))};
            BlockSelection sel{rule.int_param("k"), rule.float_param("mass"), rule.int_param("diag") != 0,
                               rule.int_param("first")};
            if (sel.top_k == 0 && sel.mass <= 0)
              throw RecipeError("topk needs k > 0 or mass > 0 (at rule " + std::to_string(rule.position) + ")");
            return std::make_unique<TopkMethod>(blocks, sel);
          }};
}

}  // namespace ditkit
