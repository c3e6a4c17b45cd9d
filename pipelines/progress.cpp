#include "pipelines/progress.h"

#include <unistd.h>

#include <cmath>

namespace ditkit {

namespace {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto total = static_cast<int64_t>(std::llround(s));
  char buf[32];
  if (total >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  return buf;
}

}  // namespace

std::string format_progress(const std::string& label, int64_t done, int64_t total, double elapsed_s) {
  char buf[160];
  double rate = elapsed_s > 0 ? done / elapsed_s : 0.0;
  // Slow loops (a denoising step can take seconds) read better as s/it than as 0.08 it/s.
  char rate_text[32];
  if (done == 0 || rate <= 0)
    std::snprintf(rate_text, sizeof rate_text, "-- it/s");
  else if (rate >= 1.0)
    std::snprintf(rate_text, sizeof rate_text, "%.2f it/s", rate);
  else
    std::snprintf(rate_text, sizeof rate_text, "%.2f s/it", 1.0 / rate);
  std::string tail = done >= total ? "done in " + format_duration(elapsed_s)
                                   : "ETA " + (rate > 0 ? format_duration((total - done) / rate) : "?");
  int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
  std::snprintf(buf, sizeof buf, "%s %lld/%lld %3d%% %s %s", label.c_str(), static_cast<long long>(done),
                static_cast<long long>(total), pct, rate_text, tail.c_str());
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::FILE* out, Mode mode)
    : label_(std::move(label)), total_(total), out_(out) {
  enabled_ = mode == Mode::kAlways || (mode == Mode::kAuto && out_ && ::isatty(::fileno(out_)));
}

Progress::~Progress() {
  if (drawn_ && !finished_) std::fputc('\n', out_);
}

void Progress::advance(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  auto now = Clock::now();
  if (done_ < total_ && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw();
}

void Progress::finish() {
  if (finished_) return;
  if (enabled_) {
    draw();
    std::fputc('\n', out_);
  }
  finished_ = true;
}

void Progress::draw() {
  double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  // "\r...\033[K": rewrite the line in place and clear what a longer earlier line left behind.
  std::fprintf(out_, "\r%s\033[K", format_progress(label_, done_, total_, elapsed).c_str());
  std::fflush(out_);
  drawn_ = true;
}

}  // namespace ditkit
