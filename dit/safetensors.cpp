#include "dit/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "dit/atomic_file.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
// Must list the same names as safetensors_itemsize() (the tests check both agree).
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool}, {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2}};

at::ScalarType scalar_type_of(const std::string& dtype) {
  for (const DtypeName& d : kDtypes)
    if (dtype == d.name) return d.type;
  TORCH_INTERNAL_ASSERT(false, "safetensors dtype ", dtype, " is parsed but has no ATen type");
}

const char* dtype_name_of(at::ScalarType type) {
  for (const DtypeName& d : kDtypes)
    if (type == d.type) return d.name;
  return nullptr;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// The whole file, mapped private and writable: pages are shared with the page cache until a
// tensor is written to, and then copied, so the file never changes (MAP_NORESERVE: nothing is
// reserved for copies that are never made).
struct SafetensorsFile::Mapping {
  uint8_t* data = nullptr;
  size_t size = 0;

  explicit Mapping(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_file_error(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    std::string problem;
    if (::fstat(fd, &st) != 0) {
      problem = std::string("cannot stat: ") + std::strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
      problem = "not a regular file";
    } else if (st.st_size > 0) {  // an empty file cannot be mapped; the header check reports it
      void* p = ::mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
      if (p == MAP_FAILED) {
        problem = std::string("cannot map: ") + std::strerror(errno);
      } else {
        data = static_cast<uint8_t*>(p);
        size = size_t(st.st_size);
      }
    }
    ::close(fd);  // the mapping stays valid without it
    if (!problem.empty()) throw_file_error(path, problem);
  }
  ~Mapping() {
    if (data) ::munmap(data, size);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path),
      mapping_(std::make_shared<Mapping>(path)),
      header_(parse_safetensors_header(mapping_->data, mapping_->size, path)) {}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> names;
  for (const SafetensorsEntry& e : header_.tensors) names.push_back(e.name);
  return names;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  const auto& t = header_.tensors;
  auto it = std::lower_bound(t.begin(), t.end(), name,
                             [](const SafetensorsEntry& e, const std::string& n) { return e.name < n; });
  return it != t.end() && it->name == name ? &*it : nullptr;
}

bool SafetensorsFile::contains(const std::string& name) const { return find(name) != nullptr; }

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) throw_file_error(path_, "no tensor named '" + name + "'");
  const auto options = at::TensorOptions().dtype(scalar_type_of(e->dtype));
  uint8_t* data = mapping_->data + header_.data_offset + e->begin;
  // ATen's kernels read elements through typed pointers, which must be aligned to the element
  // size. Our files are (the header is padded to 8 bytes), but another writer's may not be, so
  // such a tensor gets its own aligned copy.
  if (reinterpret_cast<uintptr_t>(data) % safetensors_itemsize(e->dtype) != 0) {
    at::Tensor copy = at::empty(e->shape, options);
    if (e->end > e->begin) std::memcpy(copy.data_ptr(), data, e->end - e->begin);
    return copy;
  }
  // The deleter owns a reference to the mapping, so the tensor keeps it alive.
  return at::from_blob(data, e->shape, [keep = mapping_](void*) {}, options);
}

SafetensorsCheckpoint SafetensorsCheckpoint::from_file(const std::string& path) {
  SafetensorsCheckpoint c;
  c.path_ = path;
  SafetensorsFile file(path);
  c.metadata_ = file.metadata();
  for (const std::string& name : file.keys()) c.shard_of_[name] = path;
  c.shards_.emplace(path, std::move(file));
  return c;
}

SafetensorsCheckpoint SafetensorsCheckpoint::from_index(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) throw_file_error(index_path, std::string("cannot open: ") + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  SafetensorsIndex index = parse_safetensors_index(text.str(), index_path);

  SafetensorsCheckpoint c;
  c.path_ = index_path;
  c.metadata_ = std::move(index.metadata);
  const fs::path folder = fs::path(index_path).parent_path();  // shard names are relative to it
  std::set<std::string> checked;
  for (const auto& [tensor, shard] : index.weight_map) {
    const std::string shard_path = (folder / shard).string();
    if (checked.insert(shard_path).second && !fs::is_regular_file(shard_path))
      throw_file_error(index_path, "tensor '" + tensor + "' is in shard '" + shard + "', which does not exist (" +
                                       shard_path + ")");
    c.shard_of_[tensor] = shard_path;
  }
  return c;
}

std::vector<std::string> SafetensorsCheckpoint::keys() const {
  std::vector<std::string> names;
  for (const auto& [name, shard] : shard_of_) names.push_back(name);
  return names;
}

at::Tensor SafetensorsCheckpoint::get(const std::string& name) {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) throw_file_error(path_, "no tensor named '" + name + "'");
  auto shard = shards_.find(it->second);
  if (shard == shards_.end()) shard = shards_.emplace(it->second, SafetensorsFile(it->second)).first;
  return shard->second.get(name);
}

SafetensorsCheckpoint open_safetensors(const std::string& path) {
  if (!fs::is_directory(path))
    return ends_with(path, ".index.json") ? SafetensorsCheckpoint::from_index(path)
                                          : SafetensorsCheckpoint::from_file(path);
  for (const char* name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                           "model.safetensors", "model.safetensors.index.json"}) {
    const fs::path candidate = fs::path(path) / name;
    if (fs::is_regular_file(candidate)) return open_safetensors(candidate.string());
  }
  std::vector<fs::path> found;
  for (const fs::directory_entry& entry : fs::directory_iterator(path))
    if (entry.path().extension() == ".safetensors") found.push_back(entry.path());
  if (found.size() == 1) return SafetensorsCheckpoint::from_file(found[0].string());
  throw_file_error(path, found.empty() ? "folder holds no .safetensors file"
                                       : "folder holds " + std::to_string(found.size()) +
                                             " .safetensors files and no index.json saying which to use");
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const char* dtype = dtype_name_of(t.scalar_type());
    if (!dtype)
      throw_file_error(path, "tensor '" + name + "' has dtype " + c10::toString(t.scalar_type()) +
                                 ", which safetensors cannot hold");
    const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
    entries.push_back({name, dtype, t.sizes().vec(), offset, offset + bytes});
    offset += bytes;
  }
  const std::string header = encode_safetensors_header(entries, metadata, path);

  AtomicOutput out(path);
  std::ofstream file(out.partial_path(), std::ios::binary);
  file.write(header.data(), std::streamsize(header.size()));
  // One tensor at a time on the CPU, so that saving GPU weights needs no second copy of them all.
  for (const auto& [name, t] : tensors) {
    const at::Tensor cpu = t.detach().to(at::kCPU).contiguous();
    file.write(static_cast<const char*>(cpu.const_data_ptr()), std::streamsize(cpu.nbytes()));
  }
  file.close();
  if (!file) throw_file_error(path, "cannot write '" + out.partial_path() + "': " + std::strerror(errno));
  out.commit();
}

void save_safetensors_sharded(const std::string& dir, const std::string& name,
                              const std::map<std::string, at::Tensor>& tensors, uint64_t max_shard_bytes) {
  std::vector<std::map<std::string, at::Tensor>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& [key, t] : tensors) {
    const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().emplace(key, t);
    in_shard += bytes;
    total += bytes;
  }
  const fs::path folder(dir);
  if (shards.size() == 1) return save_safetensors((folder / (name + ".safetensors")).string(), tensors);
  SafetensorsIndex index;
  index.metadata["total_size"] = std::to_string(total);
  char suffix[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    const std::string file = name + suffix;
    save_safetensors((folder / file).string(), shards[i]);
    for (const auto& [key, t] : shards[i]) index.weight_map[key] = file;
  }
  write_text_file((folder / (name + ".safetensors.index.json")).string(), encode_safetensors_index(index));
  // A single file of an earlier save would be found before the index (open_safetensors' order).
  std::error_code ignored;
  fs::remove(folder / (name + ".safetensors"), ignored);
}

}  // namespace ditkit
