// ditkit's C++ API: text to video inside an app. Needs no torch headers.
//
//   ditkit::Model model = ditkit::Model::load();            // the shipped default model
//   ditkit::GenerateOptions o = model.default_options();
//   o.prompt = "a red circle moves left on a blue background";
//   ditkit::Frames frames = model.generate(o, [](int step, int steps) { return !user_pressed_stop(); });
//   upload(frames.frame(0), frames.width, frames.height);
//
// Errors are ditkit::Error exceptions whose code() says what kind and whose what() says what was
// wrong, for people. An exception thrown by the app's progress callback passes through unchanged.
//
// Threads: load() may run on any thread, several at once. A Model may be used from any thread;
// its generate calls run one at a time (a later caller waits), so generate in parallel with
// separate Models. The progress callback runs on the thread that called generate. Each generation
// uses torch's intra-op thread pool (at::set_num_threads in torch terms; OMP_NUM_THREADS).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ditkit {

// "0.1.0": the library actually loaded (ditkit_c.h's DITKIT_VERSION is the header's).
std::string version();

// One per DITKIT_ status of the C ABI (ditkit_c.h describes each).
enum class ErrorCode {
  kCancelled,
  kInvalidArgument,
  kBufferTooSmall,
  kModelNotFound,
  kModelInvalid,
  kUnsupported,
  kIo,
  kOutOfMemory,
  kInternal,
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

struct ModelOptions {
  // A model folder; "": the shipped default model (see find_default_model()).
  std::string path;
  // "auto" (the first GPU if any, else the CPU), "cpu", "cuda" or "cuda:N".
  std::string device = "auto";
};

// Wan2.1's defaults (a loaded model's own: Model::default_options()); ditkit_c.h's
// ditkit_generate_options describes each field.
struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int width = 832, height = 480, frames = 81;
  int steps = 50;
  double guidance = 5.0;
  double shift = 3.0;
  int64_t seed = 0;
  std::string scheduler = "unipc";  // or "euler"
  std::string attention = "dense";  // a recipe string or a .json recipe file, as dit-gen --attention
  int vae_chunk = 1;
  int fps = 16;  // video files only
};

// After each denoising step (from 0); return false to cancel (an Error with kCancelled).
using ProgressCallback = std::function<bool(int step, int num_steps)>;

// RGB8 frames, rows packed: frame t, row y, column x at rgb[((t * height + y) * width + x) * 3].
struct Frames {
  int count = 0, width = 0, height = 0;
  std::vector<uint8_t> rgb;
  const uint8_t* frame(int t) const { return rgb.data() + static_cast<size_t>(t) * height * width * 3; }
};

// Bytes a frame buffer needs: frames * height * row_stride, where row_stride 0 means width * 3
// and otherwise must be at least width * 3. kInvalidArgument for sizes out of range.
size_t frame_buffer_size(const GenerateOptions& options, size_t row_stride = 0);

// The shipped default model's folder: $DITKIT_MODEL if set, else <prefix>/share/ditkit/
// default-model beside the installed library, else the source tree's assets/default-model.
// kModelNotFound, naming every place looked at, when none is a folder.
std::string find_default_model();

class Model {
 public:
  // Loads onto the device (bf16 on a GPU, fp32 on the CPU). kModelNotFound, kModelInvalid,
  // kUnsupported (no GPU for "cuda", a build without the tokenizer), kInvalidArgument (device).
  static Model load(const ModelOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Options filled with this model's defaults (its size, frames, steps, guidance, shift,
  // scheduler and negative prompt); the prompt is left empty. GenerateOptions{} holds Wan2.1's.
  GenerateOptions default_options() const;

  Frames generate(const GenerateOptions& options, const ProgressCallback& progress = {});

  // Into the caller's buffer (layout as frame_buffer_size() says); everything checkable is
  // checked before generating, a short buffer with kBufferTooSmall. On any error the buffer is
  // left untouched.
  void generate_into(const GenerateOptions& options, uint8_t* buffer, size_t buffer_size, size_t row_stride = 0,
                     const ProgressCallback& progress = {});

  // A file by its extension: .mp4 (builds with FFmpeg), .y4m, or a folder of PNG frames (no
  // extension, or a trailing '/'); it appears only when complete.
  void generate_to_file(const GenerateOptions& options, const std::string& path,
                        const ProgressCallback& progress = {});

  const std::string& path() const;  // the folder loaded
  std::string device() const;       // "cpu", "cuda:0", ...

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One RGB8 image (row_stride 0: packed) as a PNG, written atomically.
void write_png(const std::string& path, const uint8_t* rgb, int width, int height, size_t row_stride = 0);

}  // namespace ditkit
