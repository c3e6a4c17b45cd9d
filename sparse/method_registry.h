// How method files register themselves (see method_registry.cpp).
#pragma once

#include <functional>
#include <memory>

#include "sparse/attention_method.h"

namespace ditkit {

struct MethodEntry {
  MethodSpec spec;
  std::function<std::unique_ptr<AttentionMethod>(const RecipeRule&)> make;
};

const std::vector<MethodEntry>& method_registry();

}  // namespace ditkit
