// `sla`: sparse-linear attention (Zhang et al., "SLA: Beyond Sparsity in Diffusion Transformers via
// Fine-Tunable Sparse-Linear Attention", 2025). Per query block, the top `keep` share of key blocks
// by block score is critical and gets exact block-sparse softmax attention; every other block
// gets linear attention (kernels/complement_linear_attention.h), whose output passes through a
// learned D×D projection and is added: out = O_s + O_l·Wᵀ. W starts at zero, so an untuned model
// runs exactly top-k sparse attention, and fine-tuning teaches W (and the model) to use the
// linear branch.
//
// Block scores are q̄_i·(k̄_j − k̄)/√D in SLA: q mean-pooled per query block, k mean-pooled per key
// block and centred on its mean over all tokens. Within a row the centring shifts every score by
// the same q̄_i·k̄, so the ranking, and with it the plan, is what uncentred scores give: the plan
// is topk's (sparse/topk.h) with k = ceil(keep·NK), and skips the centring's passes. On the fused
// inference path plan_and_run() takes k's block means from the linear branch's summaries kernel,
// which reads k anyway.
//
// The projection: one [D, D] weight per layer shared by the heads (the paper's one Linear over
// the head dimension per attention layer), keyed "blocks.{layer}.attn1.sla_proj.weight", float32.
// A layer without one gets zeros on first use; load_weights() adopts tuned ones.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <optional>
#include <regex>

#include "kernels/block_pool.h"
#include "kernels/complement_linear_attention.h"
#include "sparse/method_registry.h"
#include "sparse/topk.h"

namespace ditkit {

namespace {

std::string projection_key(int layer) { return "blocks." + std::to_string(layer) + ".attn1.sla_proj.weight"; }

class SlaMethod final : public AttentionMethod {
 public:
  SlaMethod(BlockShape blocks, double keep, bool keep_diagonal, bool fuse)
      : blocks_(blocks), keep_(keep), keep_diagonal_(keep_diagonal), fuse_(fuse) {}
  std::string name() const override { return "sla"; }

  // The plan is discrete (which blocks), so it is built outside autograd; only the projection it
  // carries takes part in training.
  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    at::NoGradGuard no_grad;
    Plan p = plan_without_blocks(q, ctx);
    p.csr = topk_block_csr(q, k, selection(q.size(1)));
    return p;
  }

  // On the fused path the summaries kernel, which reads k anyway, also gives k's block means, so
  // the plan pools only q: one pass over k fewer than plan() then run(). Elsewhere plan() then run().
  AttentionOutput plan_and_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionContext& ctx, Plan& made) override {
    made = plan_without_blocks(q, ctx);
    // Given only where autograd does not record (the kernels' condition).
    const auto summaries = fuse_ ? fused_key_block_summaries(q, k, v, blocks_, made.linear_projection) : std::nullopt;
    {
      at::NoGradGuard no_grad;
      made.csr = summaries ? topk_block_csr_from_means(block_mean_pool(q, blocks_.q_block), summaries->k_means,
                                                       q.size(1), selection(q.size(1)))
                           : topk_block_csr(q, k, selection(q.size(1)));
    }
    if (!summaries) return run(q, k, v, made);
    return sparse_linear_attention(q, k, v, made.csr, made.blocks, made.linear_projection, true, nullptr,
                                   summaries->summaries);
  }

  std::vector<std::pair<std::string, at::Tensor>> weights(const std::vector<int>& layers, int64_t head_dim,
                                                          at::Device device) override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (int layer : layers) out.emplace_back(projection_key(layer), projection(layer, head_dim, device));
    return out;
  }

  std::vector<std::string> load_weights(const std::map<std::string, at::Tensor>& weights) override {
    static const std::regex key_pattern(R"(blocks\.(\d+)\.attn1\.sla_proj\.weight)");
    std::vector<std::string> taken;
    for (const auto& [key, tensor] : weights) {
      std::smatch m;
      if (!std::regex_match(key, m, key_pattern)) continue;
      TORCH_CHECK(tensor.dim() == 2 && tensor.size(0) == tensor.size(1), "sla: weight '", key,
                  "' must be a square [D, D] matrix, got ", tensor.sizes());
      projections_[std::stoi(m[1].str())] = tensor;
      taken.push_back(key);
    }
    return taken;
  }

 private:
  // Everything but the block map.
  Plan plan_without_blocks(const at::Tensor& q, const AttentionContext& ctx) {
    Plan p;
    p.blocks = blocks_;
    p.linear_projection = projection(ctx.layer, q.size(3), q.device());
    p.fuse_linear = fuse_;
    return p;
  }

  // topk's selection with k = ceil(keep·NK).
  TopkSelection selection(int64_t tokens) const {
    const int64_t NK = BlockGeometry{tokens, blocks_.q_block, blocks_.k_block}.num_k_blocks();
    const auto top_k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(keep_ * NK - 1e-9)));
    return TopkSelection{blocks_, BlockSelection{top_k, 0.0, keep_diagonal_, 0}};
  }

  // The layer's projection on `device` in fp32, zeros if it has none yet: a leaf autograd never
  // records, whatever the caller's grad mode.
  at::Tensor projection(int layer, int64_t head_dim, at::Device device) {
    at::NoGradGuard no_grad;
    at::Tensor& w = projections_[layer];
    if (!w.defined()) {
      w = at::zeros({head_dim, head_dim}, at::dtype(at::kFloat).device(device));
    } else if (w.device() != device || w.scalar_type() != at::kFloat) {
      w = w.to(device, at::kFloat);  // once per run on a new device: a file's weights load on the CPU
    }
    TORCH_CHECK(w.size(0) == head_dim, "sla: weight '", projection_key(layer), "' is ", w.sizes(),
                ", the model's head dim is ", head_dim);
    return w;
  }

  BlockShape blocks_;
  double keep_;
  bool keep_diagonal_;
  bool fuse_;
  std::map<int, at::Tensor> projections_;  // by layer
};

}  // namespace

MethodEntry sla_method_entry() {
  using T = ParamSpec::Type;
  std::vector<ParamSpec> params{
      {"keep", T::kFloat, 0.0001, 1, {}, false, "0.05",
       "share of key blocks per query block that get softmax attention (0.05: 95% sparsity); at least one"},
      {"diag", T::kInt, 0, 1, {}, false, "1", "1: the diagonal blocks are always among the kept ones"}};
  for (const ParamSpec& p : topk_block_params()) params.push_back(p);
  params.push_back({"fuse", T::kInt, 0, 1, {}, false, "1",
                    "1: on Hopper at head dim 128 the linear branch's last stage runs in the block-sparse kernel; "
                    "0: after it, as its own kernel"});
  MethodSpec spec{
      "sla", params,
      "sparse-linear attention: softmax on the top-scoring key blocks, learned-projection linear attention on "
      "the rest"};
  return {spec, [](const RecipeRule& rule) {
            return std::make_unique<SlaMethod>(topk_block_shape(rule), rule.float_param("keep"),
                                               rule.int_param("diag") != 0, rule.int_param("fuse") != 0);
          }};
}

}  // namespace ditkit
