#include "dit/atomic_file.h"

#include <ftw.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

namespace fs = std::filesystem;

namespace ditkit {

void remove_tree(const std::string& path) {
  // Depth-first, without following symlinks: children go before their folder.
  ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return std::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

AtomicOutput::AtomicOutput(std::string final_path, bool directory)
    : final_(std::move(final_path)), directory_(directory) {
  fs::path p(final_);
  std::string name = p.filename().string();
  if (name.empty() && directory_) name = p.parent_path().filename().string();  // "frames/"
  if (name.empty()) throw std::invalid_argument("output path '" + final_ + "' names no file");
  fs::path folder = p.filename().empty() ? p.parent_path().parent_path() : p.parent_path();
  if (!folder.empty() && !fs::is_directory(folder))
    throw std::runtime_error("output path '" + final_ + "': folder '" + folder.string() + "' does not exist");
  partial_ = (folder / ("." + name + ".part-" + std::to_string(::getpid()))).string();
  remove_tree(partial_);  // a leftover of this pid from an earlier crash
  std::error_code ec;
  if (directory_ && !fs::create_directory(partial_, ec))
    throw std::runtime_error("cannot create folder '" + partial_ + "': " + ec.message());
}

AtomicOutput::~AtomicOutput() {
  if (committed_) return;
  remove_tree(partial_);
}

void AtomicOutput::commit() {
  std::string target = final_;
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  std::error_code ec;
  if (directory_ && fs::exists(target, ec)) {
    if (!fs::is_directory(target) || !fs::is_empty(target))
      throw std::runtime_error("output '" + target + "' already exists and is not an empty folder; "
                               "remove it or choose another name");
    fs::remove(target, ec);
  }
  fs::rename(partial_, target, ec);
  if (ec) throw std::runtime_error("cannot move '" + partial_ + "' to '" + target + "': " + ec.message());
  committed_ = true;
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicOutput output(path);
  {
    std::ofstream file(output.partial_path(), std::ios::binary);
    file << text;
    file.flush();
    if (!file) throw std::runtime_error("cannot write '" + path + "'");
  }
  output.commit();
}

}  // namespace ditkit
