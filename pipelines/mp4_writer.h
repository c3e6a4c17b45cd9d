// H.264 .mp4 through FFmpeg's libraries; compiled only in builds that found FFmpeg
// (DITKIT_HAVE_FFMPEG), since the GPU machine has none.
//
// Encoder "libx264" when present, otherwise any H.264 encoder (crf and preset are x264 options
// that another encoder may ignore). yuv420p, BT.709 limited range, tagged as such, and
// +faststart so browsers can play the file while it downloads. 4:2:0 needs even sizes, so an odd
// width or height gets one more column or row, a copy of the last one.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "pipelines/video_writer.h"

namespace ditkit {

void write_mp4(const at::Tensor& frames, const std::string& path, const VideoOptions& options);

}  // namespace ditkit
