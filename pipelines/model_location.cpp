#include "pipelines/model_location.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace fs = std::filesystem;

namespace ditkit {
namespace {

// The folder of the executable or shared library this function was linked into. For the main
// program dladdr may give argv[0], which need not be a path; /proc/self/exe is.
fs::path binary_dir() {
  Dl_info info{};
  std::string file = "/proc/self/exe";
  if (dladdr(reinterpret_cast<void*>(&binary_dir), &info) && info.dli_fname &&
      std::string(info.dli_fname).find('/') != std::string::npos)
    file = info.dli_fname;
  std::error_code ec;
  const fs::path resolved = fs::canonical(file, ec);
  return ec ? fs::path() : resolved.parent_path();
}

}  // namespace

std::vector<std::string> default_model_candidates() {
  // Set, it is the only candidate: a mistyped path must not quietly pick another model.
  if (const char* env = std::getenv("DITKIT_MODEL"); env && *env) return {env};
  std::vector<std::string> out;
  // DITKIT_DATA_FROM_BINARY: the installed data folder relative to the installed bin/ and lib/
  // folders (':'-separated when they differ, as with a multiarch lib/ under /usr).
  const fs::path dir = binary_dir();
  if (!dir.empty()) {
    const std::string rel = DITKIT_DATA_FROM_BINARY;
    for (size_t start = 0; start <= rel.size();) {
      const size_t end = std::min(rel.find(':', start), rel.size());
      out.push_back((dir / rel.substr(start, end - start) / "default-model").lexically_normal().string());
      start = end + 1;
    }
  }
  out.push_back((fs::path(DITKIT_SOURCE_ASSETS) / "default-model").string());
  return out;
}

std::string find_default_model_folder() {
  const std::vector<std::string> candidates = default_model_candidates();
  std::string looked;
  for (const std::string& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) return c;
    looked += "\n  " + c;
  }
  throw ModelNotFound("the shipped default model was not found; looked in:" + looked +
                      "\n  Set DITKIT_MODEL or pass a model folder (a Wan2.1 diffusers folder works too).");
}

}  // namespace ditkit
