// Reading a model's config.json (diffusers / transformers layout) the same way for every model:
// absent or null fields keep the default, wrong types and out-of-range values are errors that
// name the file and the field.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ditkit::cfg {

using nlohmann::json;

// The file's JSON object, or an error naming the file (cannot open, not JSON, not an object).
json read_config_json(const std::string& path);

[[noreturn]] void fail(const std::string& where, const std::string& field, const std::string& problem);

// A present, non-null field (diffusers writes null for "use the default").
const json* field(const json& config, const char* name);

void read_int(const json& config, const char* name, int64_t& out, const std::string& where);
void read_bool(const json& config, const char* name, bool& out, const std::string& where);
void read_double(const json& config, const char* name, double& out, const std::string& where);

// A list whose every element passes `is_kind`; absent or null leaves `out` as it is.
template <typename T, typename IsKind>
void read_list(const json& config, const char* name, std::vector<T>& out, IsKind is_kind, const char* kind,
               const std::string& where) {
  const json* value = field(config, name);
  if (!value) return;
  if (!value->is_array()) fail(where, name, std::string("must be a list of ") + kind + ", got " + value->dump());
  out.clear();
  for (const json& element : *value) {
    if (!is_kind(element)) fail(where, name, std::string("must be a list of ") + kind + ", got " + value->dump());
    out.push_back(element.get<T>());
  }
}

void require_at_least(int64_t value, int64_t least, const char* name, const std::string& where);

// "[2, 16, 3]" for error messages.
std::string shape_str(at::IntArrayRef shape);

// The dtypes the models run in: float32, bfloat16, float16; anything else is an error naming `who`.
void check_run_dtype(at::ScalarType dtype, const char* who);

}  // namespace ditkit::cfg
