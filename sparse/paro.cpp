// `paro` (PARO, pattern-aware token reordering): each head lists its tokens in one of the six
// orders of the F, H, W axes, the order an offline calibration (dit-calibrate,
// pipelines/paro_calibration.h) found to pack its attention into the fewest blocks; over that
// order it keeps the key blocks topk would keep (sparse/topk.h), and execute_plan permutes q, k, v
// once, runs block-sparse attention and restores the order. The block mask is made at every call
// (refreshed). A static mask is step reuse's job, not this file's: `reuse:every=0:inner=(paro:...)`
// keeps each layer's first plan for the whole run.
#include "sparse/paro.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/token_permute.h"
#include "sparse/grid_cache.h"
#include "sparse/method_registry.h"
#include "sparse/topk.h"

namespace ditkit {

std::string paro_order_value(const std::vector<std::string>& per_head) {
  if (per_head.empty()) throw std::invalid_argument("paro_order_value: no heads");
  if (std::all_of(per_head.begin(), per_head.end(), [&](const std::string& o) { return o == per_head.front(); }))
    return per_head.front();
  std::string value;
  for (const std::string& order : per_head) value += (value.empty() ? "" : ".") + order;
  return value;
}

std::vector<std::string> parse_paro_order(const std::string& value) {
  std::vector<std::string> orders;
  for (size_t start = 0;;) {
    const size_t dot = value.find('.', start);
    const std::string order = value.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (std::find(kAxisOrders.begin(), kAxisOrders.end(), order) == kAxisOrders.end())
      throw std::invalid_argument("'" + order + "' (head " + std::to_string(orders.size()) + " of '" + value +
                                  "') is not an order of the axes f, h, w: each letter once, e.g. fhw, hwf, wfh");
    orders.push_back(order);
    if (dot == std::string::npos) return orders;
    start = dot + 1;
  }
}

namespace {

// The token order of a grid, built once per grid and device.
struct Layout {
  at::Tensor permutation;          // int64 [S] (all heads alike) or [H, S]; undefined: frame-major
  at::Tensor inverse_permutation;  // defined exactly when `permutation` is
};

Layout make_layout(const LatentGrid& g, const std::vector<std::string>& orders, at::Device device) {
  Layout l;
  const std::string shared = paro_order_value(orders);
  if (shared == "fhw") return l;  // frame-major already: no gather at all
  if (shared.find('.') == std::string::npos) {
    l.permutation = axis_order_permutation(g.frames, g.height, g.width, shared, device);
  } else {
    std::vector<at::Tensor> per_head;
    for (const std::string& order : orders)
      per_head.push_back(axis_order_permutation(g.frames, g.height, g.width, order, device));
    l.permutation = at::stack(per_head);
  }
  l.inverse_permutation = invert_permutation(l.permutation);
  return l;
}

class ParoMethod final : public AttentionMethod {
 public:
  ParoMethod(std::vector<std::string> orders, TopkSelection topk) : orders_(std::move(orders)), topk_(topk) {}
  std::string name() const override { return "paro"; }

  Plan plan(const at::Tensor& q, const at::Tensor& k, const AttentionContext& ctx) override {
    const LatentGrid& g = ctx.grid;
    TORCH_CHECK(g.tokens() == q.size(1), "paro: latent grid ", g.frames, "x", g.height, "x", g.width, " has ",
                g.tokens(), " tokens but q has ", q.size(1));
    TORCH_CHECK(orders_.size() == 1 || static_cast<int64_t>(orders_.size()) == q.size(2), "paro: 'order' gives ",
                orders_.size(), " axis orders but layer ", ctx.layer, " has ", q.size(2),
                " heads: give one order for all heads or one per head");
    const Layout& l = layouts_.get(g, q.device(), [&] { return make_layout(g, orders_, q.device()); });
    Plan p;
    p.blocks = topk_.blocks;
    if (!l.permutation.defined()) {
      p.csr = topk_block_csr(q, k, topk_);
      return p;
    }
    p.permutation = l.permutation;
    p.inverse_permutation = l.inverse_permutation;
    // Blocks are scored over the reordered tokens they will run on; execute_plan gathers q and k
    // again (with v), since a plan holds no tensors of a call.
    p.csr = topk_block_csr(permute_tokens(q, l.permutation), permute_tokens(k, l.permutation), topk_);
    return p;
  }

 private:
  std::vector<std::string> orders_;  // one, or one per head
  TopkSelection topk_;
  GridCache<Layout> layouts_;
};

}  // namespace

MethodEntry paro_method_entry() {
  std::vector<ParamSpec> params{
      {"order", ParamSpec::Type::kString, 0, 0, {}, true, "",
       "per head the order of the F, H, W axes, outermost first, joined by '.' (fhw.hwf.whf.fhw), or one order for "
       "all heads; dit-calibrate writes it"}};
  for (const ParamSpec& p : topk_params()) params.push_back(p);
  MethodSpec spec{"paro", params,
                  "PARO: tokens reordered per head by a calibrated axis order, then topk's blocks over that order"};
  return {spec, [](const RecipeRule& rule) {
            std::vector<std::string> orders;
            try {
              orders = parse_paro_order(rule.string_param("order"));
            } catch (const std::invalid_argument& e) {
              throw RecipeError("parameter 'order' of method 'paro': " + std::string(e.what()) + " (at rule " +
                                std::to_string(rule.position) + ")");
            }
            return std::make_unique<ParoMethod>(std::move(orders), topk_selection(rule));
          }};
}

}  // namespace ditkit
