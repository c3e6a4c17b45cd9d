// A method built around an inner one (reuse keeps its plans, tile reorders its tokens): unless it
// says otherwise, it runs plans, forgets state and hands out learned weights as the inner method
// does, so that wrapping sla keeps sla's projections trainable and loadable.
#pragma once

#include <memory>

#include "sparse/attention_method.h"

namespace ditkit {

class WrappedMethod : public AttentionMethod {
 public:
  explicit WrappedMethod(std::unique_ptr<AttentionMethod> inner) : inner_(std::move(inner)) {}

  AttentionOutput run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Plan& plan) override {
    return inner_->run(q, k, v, plan);
  }
  void reset() override { inner_->reset(); }
  std::vector<std::pair<std::string, at::Tensor>> weights(const std::vector<int>& layers, int64_t head_dim,
                                                          at::Device device) override {
    return inner_->weights(layers, head_dim, device);
  }
  std::vector<std::string> load_weights(const std::map<std::string, at::Tensor>& weights) override {
    return inner_->load_weights(weights);
  }

 protected:
  AttentionMethod& inner() { return *inner_; }

 private:
  std::unique_ptr<AttentionMethod> inner_;
};

}  // namespace ditkit
