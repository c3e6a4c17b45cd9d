#include "dit/checked_checkpoint.h"

#include <stdexcept>
#include <vector>

#include "dit/config_json.h"

namespace ditkit {

at::Tensor CheckedCheckpoint::take(const std::string& key, at::IntArrayRef shape) {
  if (!checkpoint_.contains(key))
    throw std::runtime_error(checkpoint_.path() + ": no tensor '" + key + "' (is this " + kind_ +
                             "? config: " + expectation_ + ")");
  at::Tensor t = checkpoint_.get(key);
  if (t.sizes() != shape)
    throw std::runtime_error(checkpoint_.path() + ": tensor '" + key + "' has shape " + cfg::shape_str(t.sizes()) +
                             ", expected " + cfg::shape_str(shape) + " (config: " + expectation_ + ")");
  const at::ScalarType type = t.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf)
    throw std::runtime_error(checkpoint_.path() + ": tensor '" + key + "' has dtype " +
                             std::string(c10::toString(type)) +
                             ", expected a floating type (float32, bfloat16 or float16)");
  taken_.insert(key);
  return t;
}

void CheckedCheckpoint::check_all_taken(const std::function<bool(const std::string&)>& counts,
                                        const std::string& noun) const {
  std::vector<std::string> left;
  for (const std::string& key : checkpoint_.keys())
    if (!taken_.count(key) && (!counts || counts(key))) left.push_back(key);
  if (left.empty()) return;
  throw std::runtime_error(checkpoint_.path() + ": " + std::to_string(left.size()) + " " + noun +
                           " that the config does not account for, e.g. '" + left.front() + "' (config: " +
                           expectation_ + ")");
}

}  // namespace ditkit
