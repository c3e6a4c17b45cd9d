// A one-line progress display for long loops (denoising steps, training, decoding):
//   "denoise  12/50  24%  1.93 it/s  ETA 0:19"
// redrawn in place on a terminal, at most ~10 times a second, and silent when the stream is not
// a terminal (logs and CI stay clean).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ditkit {

// The text of one progress line; `elapsed_s` is the time spent on `done` items.
std::string format_progress(const std::string& label, int64_t done, int64_t total, double elapsed_s);

class Progress {
 public:
  enum class Mode { kAuto, kAlways, kNever };  // kAuto: draw only when `out` is a terminal

  Progress(std::string label, int64_t total, std::FILE* out = stderr, Mode mode = Mode::kAuto);
  ~Progress();  // ends the line if one was drawn
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  void finish();  // draws the final state and a newline; later calls do nothing
  bool enabled() const { return enabled_; }

 private:
  using Clock = std::chrono::steady_clock;
  void draw();

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  std::FILE* out_;
  bool enabled_;
  bool drawn_ = false;
  bool finished_ = false;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_draw_{};
};

}  // namespace ditkit
