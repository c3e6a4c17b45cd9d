// What the attention-method tests share: a tolerance check, a method from one recipe rule, the
// brute-force token order of an axis permutation, and attention under a token mask.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
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

// Attention in fp64 where keep [B, H, S, S] allows token pairs: out [B, S, H, D] and lse [B, H, S].
inline AttentionOutput masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& keep) {
  auto heads = [](const at::Tensor& t) { return t.to(at::kDouble).transpose(1, 2); };
  at::Tensor s = at::matmul(heads(q), heads(k).transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  s = s.masked_fill(keep.logical_not(), -INFINITY);
  return {at::matmul(at::softmax(s, -1), heads(v)).transpose(1, 2), s.logsumexp(-1)};
}

}  // namespace ditkit::testing_support
