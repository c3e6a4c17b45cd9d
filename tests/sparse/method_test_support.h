// What the attention-method tests share: a tolerance check, a method from one recipe rule, and
// the brute-force token order of an axis permutation.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sparse/attention_method.h"

namespace ditkit::testing_support {

inline bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return at::allclose(a.to(at::kCPU, at::kDouble), b.to(at::kCPU, at::kDouble), tol, tol);
}

inline std::unique_ptr<AttentionMethod> method(const std::string& recipe) {
  return make_attention_method(parse_recipe(recipe, attention_method_specs()).rules.at(0));
}

// The frame-major token indices of grid `g` listed in axis `order` ("hwf": frames innermost), by
// nested loops: the oracle for axis_order_permutation.
inline at::Tensor nested_loop_order(const LatentGrid& g, const std::string& order) {
  std::map<char, int64_t> size{{'f', g.frames}, {'h', g.height}, {'w', g.width}};
  std::vector<int64_t> tokens;
  std::map<char, int64_t> at;
  for (at[order[0]] = 0; at[order[0]] < size[order[0]]; ++at[order[0]])
    for (at[order[1]] = 0; at[order[1]] < size[order[1]]; ++at[order[1]])
      for (at[order[2]] = 0; at[order[2]] < size[order[2]]; ++at[order[2]])
        tokens.push_back((at['f'] * g.height + at['h']) * g.width + at['w']);
  return at::tensor(tokens, at::kLong);
}

}  // namespace ditkit::testing_support
