// What a method derives from the latent grid alone (block masks, token orders), built once per
// grid and device and kept: the grid is fixed for a whole sampling run.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "sparse/plan.h"

namespace ditkit {

template <class Value>
class GridCache {
 public:
  // The value for (grid, device), made by make() the first time.
  template <class Make>
  const Value& get(const LatentGrid& g, c10::Device device, Make&& make) {
    auto key = std::make_tuple(g.frames, g.height, g.width, device.str());
    auto it = values_.find(key);
    if (it == values_.end()) it = values_.emplace(key, make()).first;
    return it->second;
  }

 private:
  std::map<std::tuple<int64_t, int64_t, int64_t, std::string>, Value> values_;
};

}  // namespace ditkit
