// Weights taken from a checkpoint by key, each checked against the shape its config implies, so
// a model loads exactly what it runs or says why not. Shared by every model in dit/.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <set>
#include <string>

#include "dit/safetensors.h"

namespace ditkit {

class CheckedCheckpoint {
 public:
  // `expectation`: the config values the shapes follow from; `kind`: what the folder should hold
  // (e.g. "a diffusers-format Wan2.1 VAE"). Both only go into error messages.
  CheckedCheckpoint(SafetensorsCheckpoint& checkpoint, std::string expectation, std::string kind)
      : checkpoint_(checkpoint), expectation_(std::move(expectation)), kind_(std::move(kind)) {}

  bool contains(const std::string& key) const { return checkpoint_.contains(key); }

  // The tensor `key`, as stored, after checking it exists, has `shape` and a floating dtype.
  at::Tensor take(const std::string& key, at::IntArrayRef shape);

  // Tensors the model did not take mean the config and the checkpoint disagree (more layers,
  // other parts): refuse rather than run a different model than the file holds. `counts` picks
  // the keys that matter (all by default); `noun` names them in the message.
  void check_all_taken(const std::function<bool(const std::string&)>& counts = {},
                       const std::string& noun = "tensors") const;

 private:
  SafetensorsCheckpoint& checkpoint_;
  std::string expectation_, kind_;
  std::set<std::string> taken_;
};

}  // namespace ditkit
