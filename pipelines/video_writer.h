// Writing generated frames to disk, with the container chosen by the output path.
//
// Frames are uint8 [T, H, W, 3] RGB. Every output goes through AtomicOutput: an error midway
// leaves nothing under the final name.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ditkit {

struct VideoOptions {
  int fps = 16;                     // Wan's native frame rate
  int crf = 18;                     // .mp4 only: H.264 constant rate factor (0-51, lower is better)
  std::string preset = "medium";    // .mp4 only: x264 speed/size trade-off
};

enum class VideoContainer { kMp4, kY4m, kPngFolder };

// The container `path` names (rules below), so callers can check a path before generating;
// std::invalid_argument for any other extension. Says nothing about whether this build has FFmpeg.
VideoContainer video_container(const std::string& path);

// Chooses by `path`:
//   "x.mp4"             H.264 yuv420p (needs a build with FFmpeg; write_mp4)
//   "x.y4m"             YUV4MPEG2, 4:4:4, BT.601 limited range (write_y4m)
//   "dir/" or "dir"     a new folder of frame_00000.png, frame_00001.png, ...
// Any other extension is an error, as is .mp4 in a build without FFmpeg.
void write_video(const at::Tensor& frames, const std::string& path, const VideoOptions& options = {});

// Checks that `t` is a non-empty uint8 RGB tensor of the given rank ([T, H, W, 3] for 4,
// [H, W, 3] for 3) and returns it contiguous on the CPU; errors name `who` and the problem.
at::Tensor contiguous_rgb(const at::Tensor& t, int64_t rank, const std::string& who);

}  // namespace ditkit
