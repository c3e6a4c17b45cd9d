// YUV4MPEG2 (.y4m): raw frames that FFmpeg, x264 and most players read, written with no library.
//
// Colour: BT.601 matrix, limited ("TV") range, 4:4:4 (no chroma subsampling). The header cannot
// name a matrix, and FFmpeg and most tools read untagged YUV as BT.601, so that is what converts
// back to the right colours (the .mp4 writer can tag its stream, and uses BT.709). Header:
//   YUV4MPEG2 W<w> H<h> F<fps>:1 Ip A1:1 C444 XCOLORRANGE=LIMITED
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ditkit {

// frames: uint8 [T, H, W, 3] RGB -> uint8 [T, 3, H, W] Y, Cb, Cr planes (rounded to nearest).
at::Tensor rgb_to_yuv444(const at::Tensor& frames);
// The inverse, clamped to 0..255: uint8 [T, 3, H, W] -> uint8 [T, H, W, 3].
at::Tensor yuv444_to_rgb(const at::Tensor& planes);

void write_y4m(const at::Tensor& frames, const std::string& path, int fps);

// Reads a file as written by write_y4m (C444, limited range) back to uint8 [T, H, W, 3] RGB, each
// value within 2 of what was written (8-bit YUV cannot hold every RGB colour). std::runtime_error
// naming the file when it is missing, not YUV4MPEG2, of another layout, or truncated.
at::Tensor read_y4m(const std::string& path);

}  // namespace ditkit
