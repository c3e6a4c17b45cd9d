// The table of methods a recipe can name. A new method is one file defining its entry, plus a
// line here.
#include "sparse/method_registry.h"

namespace ditkit {

MethodEntry dense_method_entry();
MethodEntry topk_method_entry();
MethodEntry window3d_method_entry();
MethodEntry svg_method_entry();
MethodEntry draft_method_entry();
MethodEntry paro_method_entry();
MethodEntry reuse_method_entry();
MethodEntry sla_method_entry();
MethodEntry tile_method_entry();

const std::vector<MethodEntry>& method_registry() {
  static const std::vector<MethodEntry> entries{dense_method_entry(), topk_method_entry(), window3d_method_entry(),
                                                 svg_method_entry(), draft_method_entry(), paro_method_entry(),
                                                 reuse_method_entry(), sla_method_entry(), tile_method_entry()};
  return entries;
}

const std::vector<MethodSpec>& attention_method_specs() {
  static const std::vector<MethodSpec> specs = [] {
    std::vector<MethodSpec> s;
    for (const MethodEntry& e : method_registry()) s.push_back(e.spec);
    return s;
  }();
  return specs;
}

std::unique_ptr<AttentionMethod> make_attention_method(const RecipeRule& rule) {
  for (const MethodEntry& e : method_registry())
    if (e.spec.name == rule.method) return e.make(rule);
  throw RecipeError("unknown attention method '" + rule.method + "'");
}

}  // namespace ditkit
