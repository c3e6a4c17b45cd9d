#include "dit/config_json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ditkit::cfg {

json read_config_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  json config;
  try {
    config = json::parse(text.str());
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
  if (!config.is_object()) throw std::runtime_error(path + ": must hold a JSON object, got " + config.type_name());
  return config;
}

void fail(const std::string& where, const std::string& field, const std::string& problem) {
  throw std::runtime_error(where + ": field '" + field + "' " + problem);
}

const json* field(const json& config, const char* name) {
  auto it = config.find(name);
  return it == config.end() || it->is_null() ? nullptr : &*it;
}

void read_int(const json& config, const char* name, int64_t& out, const std::string& where) {
  const json* value = field(config, name);
  if (!value) return;
  if (!value->is_number_integer()) fail(where, name, "must be an integer, got " + value->dump());
  out = value->get<int64_t>();
}

void read_bool(const json& config, const char* name, bool& out, const std::string& where) {
  const json* value = field(config, name);
  if (!value) return;
  if (!value->is_boolean()) fail(where, name, "must be true or false, got " + value->dump());
  out = value->get<bool>();
}

void read_double(const json& config, const char* name, double& out, const std::string& where) {
  const json* value = field(config, name);
  if (!value) return;
  if (!value->is_number()) fail(where, name, "must be a number, got " + value->dump());
  out = value->get<double>();
}

void require_at_least(int64_t value, int64_t least, const char* name, const std::string& where) {
  if (value < least) fail(where, name, "must be >= " + std::to_string(least) + ", got " + std::to_string(value));
}

std::string shape_str(at::IntArrayRef shape) {
  std::ostringstream s;
  s << shape;
  return s.str();
}

void check_run_dtype(at::ScalarType dtype, const char* who) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    throw std::invalid_argument(std::string(who) + ": dtype must be float32, bfloat16 or float16, got " +
                                c10::toString(dtype));
}

}  // namespace ditkit::cfg
