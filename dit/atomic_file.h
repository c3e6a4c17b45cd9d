// Output that appears under its final name only when complete.
//
// Writers create the file (or folder) under a hidden partial name beside the final one and call
// commit() at the end; an error, exception or interrupt before that leaves nothing under the
// final name, and the destructor removes the partial output.
#pragma once

#include <string>

namespace ditkit {

class AtomicOutput {
 public:
  // `directory` selects a folder output (e.g. a folder of PNG frames) instead of a file.
  explicit AtomicOutput(std::string final_path, bool directory = false);
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  // Where to write: ".<name>.part-<pid>" in the final path's folder.
  const std::string& partial_path() const { return partial_; }
  const std::string& final_path() const { return final_; }

  // Renames the partial output to the final name (replacing a file; a non-empty folder of the
  // same name is an error rather than something to delete).
  void commit();

 private:
  std::string final_;
  std::string partial_;
  bool directory_;
  bool committed_ = false;
};

// Writes `text` to `path` through an AtomicOutput; errors name the path.
void write_text_file(const std::string& path, const std::string& text);

// Removes a file or a whole folder tree; a missing path is not an error. Use it instead of
// std::filesystem::remove_all: the torch wheel's libtorch.so exports its own copy of that
// function, built with a newer GCC, and it crashes on non-empty folders when it is the one bound.
void remove_tree(const std::string& path);

}  // namespace ditkit
