// PNG for 8-bit RGB images, with no image library: frames must be writable on machines that have
// neither OpenCV nor libpng (the GPU machine).
//
// With zlib the encoder deflates each image, choosing a filter per row; without zlib it writes
// stored (uncompressed) deflate blocks, which every PNG reader accepts. The decoder reads what the
// encoder writes (8-bit RGB, non-interlaced, filter types 0-4; compressed data needs zlib).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ditkit {

// image: uint8 [H, W, 3] RGB on the CPU (non-contiguous is fine).
std::vector<uint8_t> encode_png(const at::Tensor& image);

// Returns uint8 [H, W, 3]; throws on a corrupt file (bad CRC or checksum) or an unsupported format.
at::Tensor decode_png(const std::vector<uint8_t>& bytes);

// Writes through AtomicOutput: nothing appears under `path` unless the whole file was written.
void write_png(const at::Tensor& image, const std::string& path);
at::Tensor read_png(const std::string& path);

}  // namespace ditkit
