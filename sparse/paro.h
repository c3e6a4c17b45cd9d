// The form of `paro`'s `order` parameter, shared by the method (sparse/paro.cpp) and its offline
// calibration (pipelines/paro_calibration.h), which writes it into a recipe.
#pragma once

#include <string>
#include <vector>

namespace ditkit {

// Per head an order of the F, H, W axes (kernels/token_permute.h) -> the parameter's value: the
// one order when every head has it, else one per head joined by '.' ("fhw.hwf.whf.fhw").
std::string paro_order_value(const std::vector<std::string>& per_head);

// The inverse; std::invalid_argument naming the part that is not an order of f, h, w.
std::vector<std::string> parse_paro_order(const std::string& value);

}  // namespace ditkit
