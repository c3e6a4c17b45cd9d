// `topk`: per query block, the key blocks with the highest scores between block means — a fixed
// number of them (k) or the fewest that cover a share of the estimated softmax mass — plus
// blocks always kept (the diagonal, the first blocks).
#include "sparse/topk.h"

#include <ATen/ATen.h>

#include <cmath>

#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "sparse/method_registry.h"

namespace ditkit {

std::vector<ParamSpec> topk_params() {
  using T = ParamSpec::Type;
  std::vector<ParamSpec> params{
      {"k", T::kInt, 0, 4096, {}, false, "0", "key blocks kept per query block (0: use mass)"},
      {"mass", T::kFloat, 0, 1, {}, false, "0.9", "share of the estimated softmax mass to keep when k=0"},
      {"diag", T::kInt, 0, 1, {}, false, "1", "1: always keep the blocks on the diagonal"},
      {"first", T::kInt, 0, 4096, {}, false, "0", "always keep this many leading key blocks"}};
  for (const ParamSpec& p : topk_block_params()) params.push_back(p);
  return params;
}

std::vector<ParamSpec> topk_block_params() {
  return {{"qblock", ParamSpec::Type::kString, 0, 0, {"64", "128"}, false, "128",
           "query block size in tokens; the Hopper kernels take 128, 64 runs the masked fallback (small models)"},
          {"kblock", ParamSpec::Type::kString, 0, 0, {"32", "64", "128"}, false, "64",
           "key block size in tokens; the Hopper kernels take 64 and 128, 32 runs the masked fallback (small models)"}};
}

BlockShape topk_block_shape(const RecipeRule& rule) {
  return BlockShape{std::stoll(rule.string_param("qblock")), std::stoll(rule.string_param("kblock"))};
}

TopkSelection topk_selection(const RecipeRule& rule) {
  TopkSelection t{topk_block_shape(rule),
                  BlockSelection{rule.int_param("k"), rule.float_param("mass"), rule.int_param("diag") != 0,
                                 rule.int_param("first")}};
  if (t.selection.top_k == 0 && t.selection.mass <= 0)
    throw RecipeError(rule.method + " needs k > 0 or mass > 0 (at rule " + std::to_string(rule.position) + ")");
  return t;
}

BlockCsr topk_block_csr(const at::Tensor& q, const at::Tensor& k, const TopkSelection& topk) {
  return topk_block_csr_from_means(block_mean_pool(q, topk.blocks.q_block), block_mean_pool(k, topk.blocks.k_block),
                                   q.size(1), topk);
}

BlockCsr topk_block_csr_from_means(const at::Tensor& q_means, const at::Tensor& k_means, int64_t tokens,
                                   const TopkSelection& topk) {
  const BlockShape& b = topk.blocks;
  at::Tensor scores = block_scores(q_means, k_means, 1.0 / std::sqrt(static_cast<double>(q_means.size(3))));
  return select_blocks_csr(scores, BlockGeometry{tokens, b.q_block, b.k_block}, topk.selection);
}

namespace {

class TopkMethod final : public AttentionMethod {
 public:
  explicit TopkMethod(TopkSelection topk) : topk_(topk) {}
  std::string name() const override { return "topk"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext&) override {
    Plan p;
    p.blocks = topk_.blocks;
    p.csr = topk_block_csr(q, k, topk_);
    return p;
  }

 private:
  TopkSelection topk_;
};

}  // namespace

MethodEntry topk_method_entry() {
  MethodSpec spec{"topk", topk_params(),
                  "block-sparse attention on the top-scoring key blocks of each query block"};
  return {spec, [](const RecipeRule& rule) { return std::make_unique<TopkMethod>(topk_selection(rule)); }};
}

}  // namespace ditkit
