#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "pipelines/frame_metrics.h"
#include "pipelines/png.h"
#include "pipelines/video_writer.h"
#include "pipelines/y4m.h"

#if DITKIT_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#endif

namespace fs = std::filesystem;

namespace ditkit {
namespace {

// A fresh, empty folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("ditkit_video_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    remove_tree(path_.string());
    fs::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_.string()); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

// Moving smooth content, as a video model makes: drifting colour gradients under a soft-edged
// disc that crosses the frame (edges a few pixels wide, which 4:2:0 chroma can follow).
at::Tensor moving_shapes(int64_t frames, int64_t height, int64_t width) {
  at::Tensor v = at::empty({frames, height, width, 3}, at::kByte);
  auto a = v.accessor<uint8_t, 4>();
  const double pi = std::acos(-1.0);
  for (int64_t t = 0; t < frames; ++t) {
    double phase = 2 * pi * t / frames, cx = width * (0.2 + 0.6 * t / frames), cy = height * (0.5 + 0.2 * std::sin(phase));
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        double disc = 1 / (1 + std::exp((std::hypot(x - cx, y - cy) - height / 4.0) / (height / 12.0)));
        double bg[3] = {128 + 90 * std::sin(2 * pi * x / width + phase), 60 + 150.0 * y / height,
                        128 + 80 * std::cos(2 * pi * (x + y) / (width + height) - phase)};
        const double fg[3] = {240, 200, 40};
        for (int c = 0; c < 3; ++c) a[t][y][x][c] = static_cast<uint8_t>(std::lround(bg[c] + disc * (fg[c] - bg[c])));
      }
  }
  return v;
}

at::Tensor random_frames(int64_t frames, int64_t height, int64_t width, uint32_t seed) {
  at::Tensor v = at::empty({frames, height, width, 3}, at::kByte);
  std::mt19937 rng(seed);
  for (uint8_t* p = v.data_ptr<uint8_t>(), *end = p + v.numel(); p != end; ++p) *p = static_cast<uint8_t>(rng());
  return v;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_ERROR_WITH(statement, text)                               \
  do {                                                                   \
    std::string msg_ = error_of([&] { statement; });                     \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: " << msg_; \
  } while (0)

bool have_program(const std::string& name) { return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0; }

// The first video stream's fields, as `ffprobe -show_entries stream=...` prints them.
std::map<std::string, std::string> ffprobe(const std::string& path) {
  std::string cmd = "ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,pix_fmt,width,height,"
                    "color_range,color_space,color_primaries,color_transfer,r_frame_rate -of default=nw=1 '" + path + "'";
  std::map<std::string, std::string> fields;
  FILE* pipe = popen(cmd.c_str(), "r");
  char line[256];
  while (pipe && std::fgets(line, sizeof line, pipe)) {
    std::string s(line);
    auto eq = s.find('=');
    if (eq != std::string::npos) fields[s.substr(0, eq)] = s.substr(eq + 1, s.find_last_not_of("\r\n") - eq);
  }
  if (pipe) pclose(pipe);
  return fields;
}

// Decodes with the ffmpeg program to RGB, as it converts for any tool built on it.
at::Tensor ffmpeg_decode(const std::string& path, int64_t height, int64_t width) {
  FILE* pipe = popen(("ffmpeg -v error -i '" + path + "' -f rawvideo -pix_fmt rgb24 -").c_str(), "r");
  std::string bytes;
  char buffer[1 << 16];
  for (size_t n; pipe && (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) bytes.append(buffer, n);
  if (pipe) pclose(pipe);
  const int64_t frame_bytes = height * width * 3;
  if (bytes.empty() || bytes.size() % frame_bytes) return at::Tensor();
  return at::from_blob(bytes.data(), {int64_t(bytes.size()) / frame_bytes, height, width, 3}, at::kByte).clone();
}

#if DITKIT_HAVE_OPENCV
at::Tensor from_opencv(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
}
#endif

// ---- PNG -------------------------------------------------------------------------------------

TEST(Png, EncodeDecodeRoundTrip) {
  for (const at::Tensor& image : {moving_shapes(1, 23, 37)[0], random_frames(1, 9, 70, 1)[0]}) {
    std::vector<uint8_t> bytes = encode_png(image);
    EXPECT_TRUE(at::equal(decode_png(bytes), image));
#if DITKIT_HAVE_OPENCV
    cv::Mat bgr = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8U, bytes.data()), cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty()) << "OpenCV cannot read the PNG";
    EXPECT_TRUE(at::equal(from_opencv(bgr), image));
#endif
  }
}

TEST(Png, DecoderRejectsCorruptFiles) {
  std::vector<uint8_t> bytes = encode_png(moving_shapes(1, 12, 12)[0]);
  std::vector<uint8_t> flipped = bytes;
  flipped[40] ^= 1;  // inside IDAT
  EXPECT_ERROR_WITH(decode_png(flipped), "CRC");
  EXPECT_ERROR_WITH(decode_png(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 30)), "truncated");
  EXPECT_ERROR_WITH(decode_png({1, 2, 3}), "not a PNG");
}

TEST(Png, FolderRoundTripIsExact) {
  TempDir dir;
  at::Tensor video = moving_shapes(5, 21, 30);
  for (const std::string& name : {std::string("frames/"), std::string("frames_no_slash")}) {
    SCOPED_TRACE(name);
    write_video(video.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3}), dir / name);  // non-contiguous
    fs::path folder = fs::path(dir / name);
    ASSERT_TRUE(fs::is_directory(folder));
    EXPECT_EQ(std::distance(fs::directory_iterator(folder), fs::directory_iterator()), 5);
    for (int t = 0; t < 5; ++t) {
      char file[32];
      std::snprintf(file, sizeof file, "frame_%05d.png", t);
      std::string path = (folder / file).string();
      EXPECT_TRUE(at::equal(read_png(path), video[t])) << path;
#if DITKIT_HAVE_OPENCV
      cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
      ASSERT_FALSE(bgr.empty()) << path;
      EXPECT_TRUE(at::equal(from_opencv(bgr), video[t])) << path;
#endif
    }
  }
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"frames", "frames_no_slash"}));  // no partial leftovers
}

// ---- Y4M -------------------------------------------------------------------------------------

TEST(Y4m, Bt601LimitedRangeKnownColours) {
  // BT.601 8-bit limited range: Y = 16 + 219 (0.299 R + 0.587 G + 0.114 B) / 255, and so on.
  const int rgb[6][3] = {{0, 0, 0}, {255, 255, 255}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {128, 128, 128}};
  const int yuv[6][3] = {{16, 128, 128}, {235, 128, 128}, {81, 90, 240}, {145, 54, 34}, {41, 240, 110}, {126, 128, 128}};
  at::Tensor frame = at::empty({1, 1, 6, 3}, at::kByte);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) frame[0][0][i][c] = rgb[i][c];
  at::Tensor planes = rgb_to_yuv444(frame);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(planes[0][c][0][i].item<int>(), yuv[i][c]) << "colour " << i << " plane " << c;
  // 8-bit YUV cannot hold every RGB value: the round trip is off by at most one step.
  EXPECT_LE((yuv444_to_rgb(planes).to(at::kInt) - frame.to(at::kInt)).abs().max().item<int>(), 1);
}

TEST(Y4m, FileLayoutAndRoundTrip) {
  TempDir dir;
  const int64_t frames = 4, height = 19, width = 33;  // odd sizes are fine in 4:4:4
  at::Tensor video = random_frames(frames, height, width, 7);  // every colour, the worst case
  VideoOptions options;
  options.fps = 30;
  write_video(video, dir / "clip.y4m", options);

  const std::string header = "YUV4MPEG2 W33 H19 F30:1 Ip A1:1 C444 XCOLORRANGE=LIMITED\n";
  const std::string bytes = read_bytes(dir / "clip.y4m");
  const size_t plane_bytes = 3 * height * width;
  ASSERT_EQ(bytes.size(), header.size() + frames * (6 + plane_bytes));
  EXPECT_EQ(bytes.substr(0, header.size()), header);
  at::Tensor expected = rgb_to_yuv444(video);  // Y, then Cb, then Cr, each row-major
  for (int64_t t = 0; t < frames; ++t) {
    size_t offset = header.size() + t * (6 + plane_bytes);
    EXPECT_EQ(bytes.substr(offset, 6), "FRAME\n");
    EXPECT_EQ(std::memcmp(bytes.data() + offset + 6, expected[t].data_ptr<uint8_t>(), plane_bytes), 0) << "frame " << t;
  }

  at::Tensor back = read_y4m(dir / "clip.y4m");
  ASSERT_EQ(back.sizes(), video.sizes());
  // 2 is the most any of the 2^24 colours moves (rounding to 8-bit YUV and back).
  EXPECT_LE((back.to(at::kInt) - video.to(at::kInt)).abs().max().item<int>(), 2);
  FrameMetrics m = compare_videos(video, back);
  std::printf("[ y4m RGB round trip ] mean PSNR %.2f dB, min frame %.2f dB\n", m.mean_psnr,
              *std::min_element(m.psnr.begin(), m.psnr.end()));
  for (double p : m.psnr) EXPECT_GE(p, 45.0);
}

TEST(Y4m, ReadErrorsNameTheFile) {
  TempDir dir;
  write_video(moving_shapes(3, 16, 24), dir / "clip.y4m");
  const std::string bytes = read_bytes(dir / "clip.y4m");
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
    return dir / name;
  };
  const std::string truncated = write("truncated.y4m", bytes.substr(0, bytes.size() - 100));
  EXPECT_ERROR_WITH(read_y4m(truncated), "'" + truncated + "': truncated frame 2");
  const std::string header_only = write("header_only.y4m", bytes.substr(0, bytes.find('\n') + 1));
  EXPECT_ERROR_WITH(read_y4m(header_only), "'" + header_only + "': no frames");
  const std::string text = write("text.y4m", "{\"not\": \"a video\"}\n");
  EXPECT_ERROR_WITH(read_y4m(text), "'" + text + "': not a YUV4MPEG2 file");
  const std::string empty = write("empty.y4m", "");
  EXPECT_ERROR_WITH(read_y4m(empty), "'" + empty + "': not a YUV4MPEG2 file");
  const std::string bad_size = write("bad_size.y4m", "YUV4MPEG2 Wx H16 C444\nFRAME\n");
  EXPECT_ERROR_WITH(read_y4m(bad_size), "'" + bad_size + "': missing or bad W/H");
  const std::string yuv420 = write("yuv420.y4m", "YUV4MPEG2 W24 H16 F16:1 C420jpeg\nFRAME\n");
  EXPECT_ERROR_WITH(read_y4m(yuv420), "'" + yuv420 + "': only C444");
  EXPECT_ERROR_WITH(read_y4m(dir / "missing.y4m"), "cannot open '" + dir / "missing.y4m" + "'");
}

TEST(Y4m, FfmpegReadsTheSameColours) {
  if (!have_program("ffprobe") || !have_program("ffmpeg")) GTEST_SKIP() << "ffprobe/ffmpeg not installed";
  TempDir dir;
  at::Tensor video = moving_shapes(3, 16, 24);
  write_video(video, dir / "clip.y4m");
  auto f = ffprobe(dir / "clip.y4m");
  EXPECT_EQ(f["pix_fmt"], "yuv444p");
  EXPECT_EQ(f["color_range"], "tv");
  EXPECT_EQ(f["width"], "24");
  EXPECT_EQ(f["r_frame_rate"], "16/1");
  at::Tensor back = ffmpeg_decode(dir / "clip.y4m", 16, 24);
  ASSERT_TRUE(back.defined() && back.size(0) == 3);
  FrameMetrics m = compare_videos(video, back);
  std::printf("[ y4m via ffmpeg ] mean PSNR %.2f dB\n", m.mean_psnr);
  EXPECT_GE(m.mean_psnr, 45.0);
}

// ---- MP4 -------------------------------------------------------------------------------------

#if DITKIT_HAVE_FFMPEG
// Top-level box types in file order.
std::vector<std::string> mp4_boxes(const std::string& path) {
  const std::string bytes = read_bytes(path);
  auto big_endian = [&](size_t offset, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = v << 8 | static_cast<uint8_t>(bytes[offset + i]);
    return v;
  };
  std::vector<std::string> types;
  for (size_t pos = 0; pos + 8 <= bytes.size();) {
    uint64_t size = big_endian(pos, 4);
    if (size == 1 && pos + 16 <= bytes.size()) size = big_endian(pos + 8, 8);  // a 64-bit size follows the type
    types.push_back(bytes.substr(pos + 4, 4));
    if (size < 8) break;
    pos += size;
  }
  return types;
}
#endif

#if DITKIT_HAVE_OPENCV
// What a decoder that ignores the stream's BT.709 tag and assumes BT.601 shows for these frames.
at::Tensor as_seen_with_bt601(const at::Tensor& frames) {
  auto c = frames.to(at::kDouble).unbind(-1);
  at::Tensor y = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  at::Tensor pb = (c[2] - y) / 1.8556, pr = (c[0] - y) / 1.5748;
  at::Tensor r = y + 1.402 * pr, b = y + 1.772 * pb, g = (y - 0.299 * r - 0.114 * b) / 0.587;
  return at::stack({r, g, b}, -1).round().clamp(0, 255).to(at::kByte);
}
#endif

TEST(Mp4, ReadBackThroughOpenCV) {
#if !DITKIT_HAVE_FFMPEG || !DITKIT_HAVE_OPENCV
  GTEST_SKIP() << "needs FFmpeg (to write) and OpenCV (to read back)";
#else
  TempDir dir;
  for (auto [width, height] : {std::pair<int, int>{64, 48}, {65, 49}}) {
    SCOPED_TRACE(std::to_string(width) + "x" + std::to_string(height));
    const std::string path = dir / ("clip_" + std::to_string(width) + ".mp4");
    at::Tensor video = moving_shapes(32, height, width);  // 2 s at the default 16 fps
    write_video(video, path);

    cv::VideoCapture capture(path, cv::CAP_FFMPEG);
    ASSERT_TRUE(capture.isOpened());
    std::vector<at::Tensor> decoded;
    for (cv::Mat bgr; capture.read(bgr);) {
      EXPECT_EQ(bgr.cols, (width + 1) / 2 * 2);  // odd sizes are padded to even
      EXPECT_EQ(bgr.rows, (height + 1) / 2 * 2);
      decoded.push_back(from_opencv(bgr));
    }
    ASSERT_EQ(decoded.size(), 32u);
    at::Tensor back = at::stack(decoded).narrow(1, 0, height).narrow(2, 0, width);
    // OpenCV 4.6's FFmpeg backend converts with swscale's default BT.601 matrix whatever the tag
    // says; a version that honours the tag matches the source itself. Mp4.FfmpegSees... checks
    // the tag with a decoder that honours it.
    FrameMetrics as_source = compare_videos(video, back), as_601 = compare_videos(as_seen_with_bt601(video), back);
    const bool honours_tag = as_source.mean_psnr > as_601.mean_psnr;
    const FrameMetrics& m = honours_tag ? as_source : as_601;
    std::printf("[ mp4 %dx%d via OpenCV, %s ] mean PSNR %.2f dB, min frame %.2f dB, mean SSIM %.4f\n", width, height,
                honours_tag ? "BT.709" : "BT.601", m.mean_psnr, *std::min_element(m.psnr.begin(), m.psnr.end()),
                m.mean_ssim);
    for (double p : m.psnr) EXPECT_GE(p, 35.0);
  }
#endif
}

TEST(Mp4, FfmpegSeesH264Yuv420pBt709AndFaststart) {
#if !DITKIT_HAVE_FFMPEG
  GTEST_SKIP() << "built without FFmpeg";
#else
  if (!have_program("ffprobe") || !have_program("ffmpeg")) GTEST_SKIP() << "ffprobe/ffmpeg not installed";
  TempDir dir;
  at::Tensor video = moving_shapes(32, 49, 65);
  write_video(video, dir / "clip.mp4");
  auto f = ffprobe(dir / "clip.mp4");
  EXPECT_EQ(f["codec_name"], "h264");
  EXPECT_EQ(f["pix_fmt"], "yuv420p");
  EXPECT_EQ(f["width"], "66");
  EXPECT_EQ(f["height"], "50");
  EXPECT_EQ(f["color_range"], "tv");
  EXPECT_EQ(f["color_space"], "bt709");
  EXPECT_EQ(f["color_primaries"], "bt709");
  EXPECT_EQ(f["color_transfer"], "bt709");
  EXPECT_EQ(f["r_frame_rate"], "16/1");
  auto boxes = mp4_boxes(dir / "clip.mp4");
  auto index = [&](const char* type) { return std::find(boxes.begin(), boxes.end(), type) - boxes.begin(); };
  EXPECT_LT(index("moov"), index("mdat")) << "+faststart puts the index before the data";

  at::Tensor back = ffmpeg_decode(dir / "clip.mp4", 50, 66);  // converts with the tagged BT.709
  ASSERT_TRUE(back.defined() && back.size(0) == 32);
  FrameMetrics m = compare_videos(video, back.narrow(1, 0, 49).narrow(2, 0, 65));
  std::printf("[ mp4 65x49 via ffmpeg ] mean PSNR %.2f dB, min frame %.2f dB\n", m.mean_psnr,
              *std::min_element(m.psnr.begin(), m.psnr.end()));
  for (double p : m.psnr) EXPECT_GE(p, 35.0);
#endif
}

// ---- Errors ----------------------------------------------------------------------------------

TEST(VideoWriter, RejectsUnknownExtension) {
  TempDir dir;
  const std::string path = dir / "clip.avi";
  EXPECT_ERROR_WITH(write_video(moving_shapes(2, 16, 16), path), "unknown extension '.avi'");
  EXPECT_ERROR_WITH(write_video(moving_shapes(2, 16, 16), path), path);
  EXPECT_TRUE(dir.entries().empty());
}

TEST(VideoWriter, RejectsBadTensors) {
  TempDir dir;
  const std::string path = dir / "clip.y4m";
  EXPECT_ERROR_WITH(write_video(at::zeros({2, 16, 16, 3}, at::kFloat), path), "dtype is Float");
  EXPECT_ERROR_WITH(write_video(at::zeros({16, 16, 3}, at::kByte), path), "has 3 dimensions");
  EXPECT_ERROR_WITH(write_video(at::zeros({2, 16, 16, 4}, at::kByte), path), "not 3 channels");
  EXPECT_ERROR_WITH(write_video(at::zeros({0, 16, 16, 3}, at::kByte), path), "empty");
  EXPECT_ERROR_WITH(write_video(at::Tensor(), path), "undefined");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(VideoWriter, MissingOutputFolder) {
  TempDir dir;
  for (const char* name : {"missing/clip.y4m", "missing/frames/", "missing/clip.mp4"}) {
    if (!DITKIT_HAVE_FFMPEG && std::string(name).find(".mp4") != std::string::npos) continue;
    EXPECT_ERROR_WITH(write_video(moving_shapes(2, 16, 16), dir / name), "does not exist");
  }
  EXPECT_TRUE(dir.entries().empty());
}

TEST(VideoWriter, Mp4WithoutFfmpegSaysWhatToUse) {
  if (DITKIT_HAVE_FFMPEG) GTEST_SKIP() << "this build has FFmpeg";
  TempDir dir;
  const std::string path = dir / "clip.mp4";
  std::string msg = error_of([&] { write_video(moving_shapes(2, 16, 16), path); });
  for (const std::string& part : {path, std::string(".y4m"), std::string("PNG folder")})
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
  EXPECT_TRUE(dir.entries().empty());
}

// Each writer produces its whole output under a partial name and then fails to move it into
// place, because a non-empty folder holds the final name: the folder must be untouched and the
// partial output gone.
TEST(VideoWriter, FailureAfterWritingLeavesNothingBehind) {
  TempDir dir;
  std::vector<std::string> names = {"frames", "clip.y4m"};
  if (DITKIT_HAVE_FFMPEG) names.push_back("clip.mp4");
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    fs::create_directory(dir / name);
    std::ofstream(dir / name + "/keep.txt") << "user data";
    EXPECT_NE(error_of([&] { write_video(moving_shapes(3, 16, 16), dir / name); }), "(no error)");
    EXPECT_EQ(read_bytes(dir / name + "/keep.txt"), "user data");
    EXPECT_EQ(std::distance(fs::directory_iterator(dir / name), fs::directory_iterator()), 1);
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(dir.entries(), names);  // no ".<name>.part-<pid>" left
}

}  // namespace
}  // namespace ditkit
