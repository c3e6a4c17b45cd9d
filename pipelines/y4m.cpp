#include "pipelines/y4m.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "dit/atomic_file.h"
#include "pipelines/video_writer.h"

namespace ditkit {
namespace {

// BT.601 luma weights; limited range puts Y in 16..235 and Cb, Cr in 16..240.
constexpr double kKr = 0.299, kKb = 0.114, kKg = 1.0 - kKr - kKb;
constexpr double kYScale = 219.0 / 255.0, kCScale = 224.0 / 255.0;

uint8_t to_byte(double v) { return static_cast<uint8_t>(std::clamp<long>(std::lround(v), 0, 255)); }

}  // namespace

// Plain loops in float64: several times faster than a chain of ATen ops on strided channels, and
// rounding is the same on every machine (the tests compare exact bytes).
at::Tensor rgb_to_yuv444(const at::Tensor& frames) {
  at::Tensor rgb = contiguous_rgb(frames, 4, "rgb_to_yuv444");
  const int64_t n = rgb.size(0), plane = rgb.size(1) * rgb.size(2);
  at::Tensor planes = at::empty({n, 3, rgb.size(1), rgb.size(2)}, at::kByte);
  const uint8_t* px = rgb.data_ptr<uint8_t>();
  uint8_t* out = planes.data_ptr<uint8_t>();
  for (int64_t f = 0; f < n; ++f, out += 3 * plane)
    for (int64_t i = 0; i < plane; ++i, px += 3) {
      double luma = kKr * px[0] + kKg * px[1] + kKb * px[2];
      out[i] = to_byte(16 + kYScale * luma);
      out[plane + i] = to_byte(128 + kCScale * (px[2] - luma) / (2 * (1 - kKb)));
      out[2 * plane + i] = to_byte(128 + kCScale * (px[0] - luma) / (2 * (1 - kKr)));
    }
  return planes;
}

at::Tensor yuv444_to_rgb(const at::Tensor& planes) {
  if (planes.scalar_type() != at::kByte || planes.dim() != 4 || planes.size(1) != 3)
    throw std::invalid_argument("yuv444_to_rgb: planes must be uint8 [T, 3, H, W]");
  at::Tensor yuv = planes.to(at::kCPU).contiguous();
  const int64_t n = yuv.size(0), plane = yuv.size(2) * yuv.size(3);
  at::Tensor rgb = at::empty({n, yuv.size(2), yuv.size(3), 3}, at::kByte);
  const uint8_t* in = yuv.data_ptr<uint8_t>();
  uint8_t* px = rgb.data_ptr<uint8_t>();
  for (int64_t f = 0; f < n; ++f, in += 3 * plane)
    for (int64_t i = 0; i < plane; ++i, px += 3) {
      double luma = (in[i] - 16) / kYScale;
      double r = luma + 2 * (1 - kKr) * (in[2 * plane + i] - 128) / kCScale;
      double b = luma + 2 * (1 - kKb) * (in[plane + i] - 128) / kCScale;
      px[0] = to_byte(r);
      px[1] = to_byte((luma - kKr * r - kKb * b) / kKg);
      px[2] = to_byte(b);
    }
  return rgb;
}

void write_y4m(const at::Tensor& frames, const std::string& path, int fps) {
  at::Tensor video = contiguous_rgb(frames, 4, "write_y4m");
  if (fps <= 0) throw std::invalid_argument("write_y4m: fps must be positive, got " + std::to_string(fps));
  AtomicOutput output(path);
  std::ofstream out(output.partial_path(), std::ios::binary);
  out << "YUV4MPEG2 W" << video.size(2) << " H" << video.size(1) << " F" << fps
      << ":1 Ip A1:1 C444 XCOLORRANGE=LIMITED\n";
  for (int64_t t = 0; t < video.size(0) && out; ++t) {
    at::Tensor planes = rgb_to_yuv444(video.narrow(0, t, 1));  // a frame at a time: little extra memory
    out << "FRAME\n";
    out.write(reinterpret_cast<const char*>(planes.data_ptr<uint8_t>()), planes.numel());
  }
  out.close();
  if (!out) throw std::runtime_error("write_y4m: cannot write '" + output.partial_path() + "'");
  output.commit();
}

at::Tensor read_y4m(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("read_y4m: cannot open '" + path + "'");
  auto fail = [&](const std::string& why) { return std::runtime_error("read_y4m: '" + path + "': " + why); };
  std::string line, token;
  std::getline(in, line);
  std::istringstream header(line);
  header >> token;
  if (token != "YUV4MPEG2") throw fail("not a YUV4MPEG2 file");
  int64_t width = 0, height = 0;
  std::string chroma = "420jpeg", range = "LIMITED";  // the format's defaults
  auto size = [](const std::string& digits) -> int64_t {  // 0, refused below, unless 1 to 9 digits
    const bool ok = !digits.empty() && digits.size() < 10 &&
                    std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    return ok ? std::stoll(digits) : 0;
  };
  while (header >> token) {
    if (token[0] == 'W') width = size(token.substr(1));
    if (token[0] == 'H') height = size(token.substr(1));
    if (token[0] == 'C') chroma = token.substr(1);
    if (token.rfind("XCOLORRANGE=", 0) == 0) range = token.substr(12);
  }
  if (width <= 0 || height <= 0) throw fail("missing or bad W/H in the header");
  if (chroma != "444" || range != "LIMITED")
    throw fail("only C444 with limited colour range is supported, got C" + chroma + " " + range);
  std::vector<at::Tensor> frames;
  while (std::getline(in, line)) {
    if (line.rfind("FRAME", 0) != 0) throw fail("expected FRAME at frame " + std::to_string(frames.size()));
    at::Tensor planes = at::empty({1, 3, height, width}, at::kByte);
    in.read(reinterpret_cast<char*>(planes.data_ptr<uint8_t>()), planes.numel());
    if (in.gcount() != planes.numel()) throw fail("truncated frame " + std::to_string(frames.size()));
    frames.push_back(yuv444_to_rgb(planes));
  }
  if (frames.empty()) throw fail("no frames");
  return at::cat(frames);
}

}  // namespace ditkit
