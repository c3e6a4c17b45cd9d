#include "dit/safetensors_header.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace ditkit {
namespace {

using json = nlohmann::json;

struct DtypeSize {
  const char* name;
  size_t bytes;
};
constexpr DtypeSize kDtypeSizes[] = {{"F64", 8}, {"F32", 4},     {"F16", 2},     {"BF16", 2},
                                     {"I64", 8}, {"I32", 4},     {"I16", 2},     {"I8", 1},
                                     {"U8", 1},  {"BOOL", 1},    {"F8_E4M3", 1}, {"F8_E5M2", 1}};

json parse_json(const char* first, const char* last, const std::string& file) {
  try {
    return json::parse(first, last);
  } catch (const json::exception& e) {
    throw_file_error(file, std::string("invalid JSON: ") + e.what());
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string range_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t buffer_bytes, const std::string& file) {
  const std::string tensor = "tensor '" + name + "'";
  if (!v.is_object()) throw_file_error(file, tensor + ": entry is not a JSON object");
  auto field = [&](const char* key) -> const json& {
    auto it = v.find(key);
    if (it == v.end()) throw_file_error(file, tensor + ": missing '" + key + "'");
    return *it;
  };
  SafetensorsEntry e;
  e.name = name;

  const json& dtype = field("dtype");
  if (!dtype.is_string()) throw_file_error(file, tensor + ": 'dtype' is not a string");
  e.dtype = dtype.get<std::string>();
  const size_t itemsize = safetensors_itemsize(e.dtype);
  if (itemsize == 0) throw_file_error(file, tensor + ": unknown dtype '" + e.dtype + "'");

  const json& shape = field("shape");
  if (!shape.is_array()) throw_file_error(file, tensor + ": 'shape' is not a list");
  for (const json& d : shape) {
    if (!d.is_number_integer()) throw_file_error(file, tensor + ": 'shape' holds " + d.dump() + ", not an integer");
    // nlohmann stores non-negative literals as unsigned, so both checks are needed.
    if (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      throw_file_error(file, tensor + ": dimension " + d.dump() + " overflows int64");
    if (d.get<int64_t>() < 0) throw_file_error(file, tensor + ": negative dimension " + d.dump());
    e.shape.push_back(d.get<int64_t>());
  }
  // Checked before the byte count: a wrapped product could match any offsets.
  uint64_t bytes = itemsize;
  for (int64_t d : e.shape) {
    if (__builtin_mul_overflow(bytes, uint64_t(d), &bytes) || bytes > uint64_t(std::numeric_limits<int64_t>::max()))
      throw_file_error(file, tensor + ": shape " + shape_text(e.shape) + " overflows 64-bit sizes");
  }

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    throw_file_error(file, tensor + ": 'data_offsets' must be two non-negative integers, not " + offsets.dump());
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  const std::string range = "data_offsets " + range_text(e.begin, e.end);
  if (e.end < e.begin) throw_file_error(file, tensor + ": " + range + " end before they begin");
  if (e.end > buffer_bytes)
    throw_file_error(file, tensor + ": " + range + " run past the end of the data buffer (" +
                               std::to_string(buffer_bytes) + " bytes)");
  if (e.end - e.begin != bytes)
    throw_file_error(file, tensor + ": shape " + shape_text(e.shape) + " of " + e.dtype + " needs " +
                               std::to_string(bytes) + " bytes but " + range + " hold " +
                               std::to_string(e.end - e.begin));
  return e;
}

}  // namespace

void throw_file_error(const std::string& file, const std::string& problem) {
  throw std::runtime_error(file + ": " + problem);
}

size_t safetensors_itemsize(const std::string& dtype) {
  for (const DtypeSize& d : kDtypeSizes)
    if (dtype == d.name) return d.bytes;
  return 0;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size, const std::string& file_name) {
  if (file_size < 8)
    throw_file_error(file_name, "truncated: " + std::to_string(file_size) +
                                    " bytes is too short for the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | bytes[i];  // little-endian on any host
  if (n > kMaxSafetensorsHeaderBytes)
    throw_file_error(file_name, "header length " + std::to_string(n) + " bytes is implausible (limit " +
                                    std::to_string(kMaxSafetensorsHeaderBytes) + "); not a safetensors file?");
  if (n > file_size - 8)
    throw_file_error(file_name, "truncated: header length " + std::to_string(n) + " runs past the end of the file (" +
                                    std::to_string(file_size) + " bytes)");
  const char* json_begin = reinterpret_cast<const char*>(bytes) + 8;
  const json root = parse_json(json_begin, json_begin + n, file_name);
  if (!root.is_object()) throw_file_error(file_name, "header is not a JSON object");

  SafetensorsHeader header;
  header.data_offset = 8 + n;
  for (const auto& [key, value] : root.items()) {  // a JSON object iterates sorted by key
    if (key != "__metadata__") {
      header.tensors.push_back(parse_entry(key, value, file_size - header.data_offset, file_name));
      continue;
    }
    if (!value.is_object()) throw_file_error(file_name, "'__metadata__' is not a JSON object");
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string()) throw_file_error(file_name, "'__metadata__' value of '" + k + "' is not a string");
      header.metadata[k] = v.get<std::string>();
    }
  }

  // Empty tensors occupy no bytes, so only the others can overlap.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : header.tensors)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsEntry& prev = *by_offset[i - 1];
    const SafetensorsEntry& cur = *by_offset[i];
    if (cur.begin < prev.end)
      throw_file_error(file_name, "tensor '" + cur.name + "' data " + range_text(cur.begin, cur.end) +
                                      " overlaps tensor '" + prev.name + "' " + range_text(prev.begin, prev.end));
  }
  return header;
}

std::string encode_safetensors_header(const std::vector<SafetensorsEntry>& tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      const std::string& file_name) {
  json root = json::object();
  if (!metadata.empty()) root["__metadata__"] = metadata;
  for (const SafetensorsEntry& t : tensors) {
    if (t.name == "__metadata__") throw_file_error(file_name, "tensor name '__metadata__' is reserved for metadata");
    json entry = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
    if (!root.emplace(t.name, std::move(entry)).second)
      throw_file_error(file_name, "tensor '" + t.name + "' appears twice");
  }
  std::string text;
  try {
    text = root.dump();
  } catch (const json::exception& e) {  // names or metadata that are not valid UTF-8
    throw_file_error(file_name, std::string("cannot write the header: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char(uint64_t(text.size()) >> (8 * i) & 0xff);
  return out + text;
}

SafetensorsIndex parse_safetensors_index(const std::string& text, const std::string& file_name) {
  const json root = parse_json(text.data(), text.data() + text.size(), file_name);
  if (!root.is_object()) throw_file_error(file_name, "index is not a JSON object");
  SafetensorsIndex index;
  if (auto meta = root.find("metadata"); meta != root.end()) {
    if (!meta->is_object()) throw_file_error(file_name, "'metadata' is not a JSON object");
    for (const auto& [k, v] : meta->items()) index.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  auto map = root.find("weight_map");
  if (map == root.end() || !map->is_object())
    throw_file_error(file_name, "'weight_map' is missing or not a JSON object");
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string()) throw_file_error(file_name, "weight_map entry '" + tensor + "' is not a file name");
    index.weight_map[tensor] = shard.get<std::string>();
  }
  return index;
}

std::string encode_safetensors_index(const SafetensorsIndex& index) {
  json meta = json::object();
  for (const auto& [k, v] : index.metadata) {
    const json number = json::parse(v, nullptr, /*allow_exceptions=*/false);
    meta[k] = number.is_number() ? number : json(v);
  }
  return json{{"metadata", meta}, {"weight_map", index.weight_map}}.dump(2) + "\n";
}

}  // namespace ditkit
