// Reading and writing safetensors checkpoints as ATen tensors.
//
// Reading maps the file and returns CPU tensors that point into the mapping (no copy; the caller
// may .to(device)); each tensor keeps the mapping alive, so it outlives the object it came from.
// The mapping is private copy-on-write: writing into a loaded tensor never changes the file.
// Errors are std::runtime_error naming the file and the problem.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dit/safetensors_header.h"

namespace ditkit {

// One .safetensors file, mapped and validated when constructed.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  std::vector<std::string> keys() const;  // sorted
  bool contains(const std::string& name) const;
  // A CPU tensor over the mapped bytes; a copy only where the data is misaligned for its dtype.
  at::Tensor get(const std::string& name) const;

 private:
  struct Mapping;
  const SafetensorsEntry* find(const std::string& name) const;

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  SafetensorsHeader header_;
};

// Tensors by name from one file or from a sharded checkpoint, whose `*.safetensors.index.json`
// names the shard file of each tensor. Shards open on first use and stay open.
class SafetensorsCheckpoint {
 public:
  // Every shard the index names must exist (checked now, so a broken download fails early).
  static SafetensorsCheckpoint from_index(const std::string& index_path);
  static SafetensorsCheckpoint from_file(const std::string& path);

  const std::string& path() const { return path_; }  // the index or single file
  // The index's "metadata" (e.g. total_size), or a single file's __metadata__.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> keys() const;  // sorted
  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
  // Not const, and not safe to call from several threads at once: it may open a shard.
  at::Tensor get(const std::string& name);

 private:
  SafetensorsCheckpoint() = default;

  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::string> shard_of_;    // tensor name -> shard path
  std::map<std::string, SafetensorsFile> shards_;  // shard path -> opened file
};

// Opens a .safetensors file, a *.safetensors.index.json, or a model folder. A folder is searched
// in order for diffusion_pytorch_model.safetensors, diffusion_pytorch_model.safetensors.index.json,
// model.safetensors, model.safetensors.index.json, then a lone *.safetensors file.
SafetensorsCheckpoint open_safetensors(const std::string& path);

// Writes `tensors` (any device and layout; stored contiguous, sorted by name) and `metadata` to
// `path` atomically: the file appears complete or not at all.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` into folder `dir` as `name`.safetensors when their data takes at most
// `max_shard_bytes`, else in Hugging Face's sharded layout: `name`-0000i-of-0000N.safetensors, each
// at most `max_shard_bytes` of data (tensors in name order; one larger than that gets a shard of its
// own), and `name`.safetensors.index.json mapping each tensor to its shard, which open_safetensors
// reads; a `name`.safetensors left by an earlier save, which would shadow the index, is removed.
// For checkpoints that must travel in files of a bounded size. Each file is written atomically.
void save_safetensors_sharded(const std::string& dir, const std::string& name,
                              const std::map<std::string, at::Tensor>& tensors, uint64_t max_shard_bytes);

}  // namespace ditkit
