// Where a model's module constructors get their weights: taken from a checkpoint (by key, shape
// checked: CheckedCheckpoint) or drawn at random on the CPU, so that a seed gives the same weights
// on every device; then moved to the model's device in the dtype the model picks per key. Every
// weight handed out is remembered by key, in order, so the model can list its parameters (the
// very tensors it computes with, which a trainer may update in place). `Init` is the model's own
// description of how a weight starts when drawn; a checkpoint ignores it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "dit/checked_checkpoint.h"

namespace ditkit {

template <typename Init>
class ModelWeights {
 public:
  // Draws one fp32 CPU weight of `shape`, as `init` says, from `generator`.
  using Draw = std::function<at::Tensor(const Init& init, at::IntArrayRef shape, at::Generator& generator)>;
  // The dtype a weight runs in (e.g. fp32 for the modules a model keeps in fp32).
  using DtypeOf = std::function<at::ScalarType(const std::string& key)>;

  ModelWeights(CheckedCheckpoint& checkpoint, at::Device device, DtypeOf dtype_of)
      : checkpoint_(&checkpoint), device_(device), dtype_of_(std::move(dtype_of)) {}

  ModelWeights(uint64_t seed, Draw draw, at::Device device, DtypeOf dtype_of)
      : draw_(std::move(draw)),
        generator_(at::make_generator<at::CPUGeneratorImpl>(seed)),
        device_(device),
        dtype_of_(std::move(dtype_of)) {}

  at::Tensor operator()(const std::string& key, std::vector<int64_t> shape, const Init& init) {
    at::Tensor weight = checkpoint_ ? checkpoint_->take(key, shape) : draw_(init, shape, generator_);
    weight = weight.to(device_, dtype_of_(key));
    taken_.emplace_back(key, weight);
    return weight;
  }

  // Every weight handed out so far, in order.
  const std::vector<std::pair<std::string, at::Tensor>>& taken() const { return taken_; }

 private:
  CheckedCheckpoint* checkpoint_ = nullptr;
  Draw draw_;
  at::Generator generator_;
  at::Device device_;
  DtypeOf dtype_of_;
  std::vector<std::pair<std::string, at::Tensor>> taken_;
};

}  // namespace ditkit
