#include "pipelines/video_writer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "pipelines/png.h"
#include "pipelines/y4m.h"
#if DITKIT_HAVE_FFMPEG
#include "pipelines/mp4_writer.h"
#endif

namespace ditkit {
namespace {

void write_png_folder(const at::Tensor& video, const std::string& path) {
  AtomicOutput output(path, /*directory=*/true);
  for (int64_t t = 0; t < video.size(0); ++t) {
    char name[32];
    std::snprintf(name, sizeof name, "frame_%05lld.png", static_cast<long long>(t));
    write_png(video[t], (std::filesystem::path(output.partial_path()) / name).string());
  }
  output.commit();
}

}  // namespace

at::Tensor contiguous_rgb(const at::Tensor& t, int64_t rank, const std::string& who) {
  const std::string shape = rank == 4 ? "[T, H, W, 3]" : "[H, W, 3]";
  auto fail = [&](const std::string& why) {
    return std::invalid_argument(who + ": expected a uint8 " + shape + " RGB tensor, but " + why);
  };
  if (!t.defined()) throw fail("the tensor is undefined");
  if (t.scalar_type() != at::kByte) throw fail(std::string("dtype is ") + c10::toString(t.scalar_type()));
  if (t.dim() != rank) throw fail("it has " + std::to_string(t.dim()) + " dimensions");
  if (t.size(-1) != 3) throw fail("the last dimension is " + std::to_string(t.size(-1)) + ", not 3 channels");
  if (t.numel() == 0) throw fail("it is empty");
  return t.to(at::kCPU).contiguous();
}

VideoContainer video_container(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".y4m") return VideoContainer::kY4m;
  if (ext.empty()) return VideoContainer::kPngFolder;  // also "dir/": its filename and extension are empty
  if (ext == ".mp4") return VideoContainer::kMp4;
  throw std::invalid_argument("write_video: cannot write '" + path + "': unknown extension '" + ext +
                              "' (use .mp4, .y4m, or a folder name for PNG frames)");
}

void write_video(const at::Tensor& frames, const std::string& path, const VideoOptions& options) {
  at::Tensor video = contiguous_rgb(frames, 4, "write_video");
  switch (video_container(path)) {
    case VideoContainer::kY4m:
      return write_y4m(video, path, options.fps);
    case VideoContainer::kPngFolder:
      return write_png_folder(video, path);
    case VideoContainer::kMp4:
#if DITKIT_HAVE_FFMPEG
      return write_mp4(video, path, options);
#else
      throw std::runtime_error("write_video: cannot write '" + path + "': this build has no FFmpeg, so no .mp4; "
                               "use a .y4m file or a PNG folder (a path ending in '/')");
#endif
  }
}

}  // namespace ditkit
