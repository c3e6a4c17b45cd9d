// The safetensors container without tensors: parsing and writing its JSON header, and parsing a
// sharded checkpoint's index. Torch-free (std + nlohmann/json) so that it can be fuzzed alone.
//
// File layout: an 8-byte little-endian u64 N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}            (optional)
// then the data buffer; offsets are relative to the buffer's start (byte 8 + N).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ditkit {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // [begin, end) in the data buffer
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // where the data buffer starts in the file: 8 + N
};

// Real headers are kilobytes to a few megabytes; a larger length means a corrupt or foreign file
// (the same limit as the reference implementation).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Bytes per element of a safetensors dtype name ("F32" -> 4), or 0 for a name ditkit does not know.
size_t safetensors_itemsize(const std::string& dtype);

// Parses and validates the header of a file of `file_size` bytes whose first min(file_size, 8 + N)
// bytes are at `bytes` (the whole file will do). Every tensor is checked against the file: known
// dtype, non-negative shape whose byte count equals its offsets, data inside the buffer and not
// overlapping another tensor's. Throws std::runtime_error("<file_name>: <problem>").
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size, const std::string& file_name);

// The first 8 + N bytes of a file holding `tensors` (their offsets as given) and `metadata`, with
// the JSON padded by spaces to a multiple of 8 bytes so that the data buffer starts 8-aligned.
// `file_name` only names the file in errors.
std::string encode_safetensors_header(const std::vector<SafetensorsEntry>& tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      const std::string& file_name);

// A sharded checkpoint's `*.safetensors.index.json`.
struct SafetensorsIndex {
  std::map<std::string, std::string> metadata;    // non-string values kept as JSON text ("total_size")
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name, as written
};

SafetensorsIndex parse_safetensors_index(const std::string& text, const std::string& file_name);
// The inverse: the index's JSON text ("total_size" and other metadata written as numbers where they
// read as one, as Hugging Face writes it).
std::string encode_safetensors_index(const SafetensorsIndex& index);

// Throws std::runtime_error("<file>: <problem>"), the form of every error about a checkpoint file.
[[noreturn]] void throw_file_error(const std::string& file, const std::string& problem);

}  // namespace ditkit
