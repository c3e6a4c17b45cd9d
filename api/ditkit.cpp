// The C++ API over TextToVideo: checks what it can before any work, and turns every internal
// exception into a ditkit::Error with a code the C ABI maps to a status.
#include "ditkit/ditkit.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <mutex>

#include "ditkit_config.h"
#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/png.h"
#include "pipelines/text_to_video.h"
#include "pipelines/video_writer.h"
#include "sparse/attention_method.h"

namespace ditkit {
namespace {

// Runs f, rethrowing any internal exception as an Error: invalid arguments (bad sizes, recipes)
// and out-of-memory keep their kind, anything else becomes `fallback`; `context` prefixes the
// message.
template <typename F>
auto translated(ErrorCode fallback, const std::string& context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const SamplingCancelled&) {
    throw Error(ErrorCode::kCancelled, "generation cancelled by the progress callback");
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::kOutOfMemory, context + "out of memory");
  } catch (const c10::OutOfMemoryError& e) {
    throw Error(ErrorCode::kOutOfMemory, context + e.what_without_backtrace());
  } catch (const OutOfGpuMemory& e) {
    throw Error(ErrorCode::kOutOfMemory, context + e.what());
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::kInvalidArgument, context + e.what());
  } catch (const c10::Error& e) {
    throw Error(fallback, context + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error(fallback, context + e.what());
  }
}

Error invalid(const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); }

// A GPU asked for on a machine without one is "unsupported here"; any other bad name is invalid.
at::Device parse_device(const std::string& name) {
  try {
    return device_from_flag(name, "device");
  } catch (const NoGpuError& e) {
    throw Error(ErrorCode::kUnsupported, e.what());
  } catch (const std::invalid_argument& e) {
    throw invalid(e.what());
  }
}

void check_options(const GenerateOptions& o) {
  auto positive = [](const char* name, int value) {
    if (value <= 0) throw invalid(std::string(name) + " must be positive, got " + std::to_string(value));
  };
  positive("width", o.width);
  positive("height", o.height);
  positive("frames", o.frames);
  positive("steps", o.steps);
  positive("vae_chunk", o.vae_chunk);
  positive("fps", o.fps);
  if (!(o.guidance >= 0)) throw invalid("guidance must be 0 or more, got " + std::to_string(o.guidance));
  if (!(o.shift > 0)) throw invalid("shift must be positive, got " + std::to_string(o.shift));
  if (o.scheduler != "unipc" && o.scheduler != "euler")
    throw invalid("scheduler '" + o.scheduler + "': expected unipc or euler");
}

// The layout of frame buffers: frames * height rows of `stride` bytes.
size_t checked_buffer_size(const GenerateOptions& o, size_t& stride) {
  check_options(o);
  const size_t row = static_cast<size_t>(o.width) * 3;
  if (stride == 0) stride = row;
  if (stride < row)
    throw invalid("row stride " + std::to_string(stride) + " is less than width * 3 = " + std::to_string(row));
  const size_t rows = static_cast<size_t>(o.frames) * static_cast<size_t>(o.height);
  if (stride > std::numeric_limits<size_t>::max() / rows) throw invalid("the frame buffer size overflows size_t");
  return rows * stride;
}

}  // namespace

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

std::string version() { return DITKIT_VERSION_STRING; }

size_t frame_buffer_size(const GenerateOptions& options, size_t row_stride) {
  return checked_buffer_size(options, row_stride);
}

std::string find_default_model() {
  try {
    return ditkit::find_default_model_folder();
  } catch (const ModelNotFound& e) {
    throw Error(ErrorCode::kModelNotFound, e.what());
  }
}

struct Model::Impl {
  std::string path;
  TextToVideo pipeline;
  std::mutex mutex;  // one generation at a time: TextToVideo keeps per-run state (timings)

  // Frames [T, H, W, 3] uint8, contiguous on the CPU. Checks the recipe against the model first.
  at::Tensor run(const GenerateOptions& o, const ProgressCallback& progress) {
    const Recipe recipe = translated(ErrorCode::kInvalidArgument, "attention: ", [&] {
      Recipe r = load_recipe(o.attention, attention_method_specs());
      check_recipe(r, static_cast<int>(pipeline.transformer().config().num_layers), o.steps);
      return r;
    });
    TextToVideoOptions t;
    t.prompt = o.prompt;
    t.negative_prompt = o.negative_prompt;
    t.width = o.width;
    t.height = o.height;
    t.frames = o.frames;
    t.vae_chunk = o.vae_chunk;
    t.sampling.steps = o.steps;
    t.sampling.guidance = o.guidance;
    t.sampling.shift = o.shift;
    t.sampling.seed = o.seed;
    t.sampling.scheduler = o.scheduler;
    // The app's own exception from its callback passes through as it was thrown.
    std::exception_ptr callback_error;
    StepCallback on_step;
    if (progress)
      on_step = [&](int step, int num_steps) {
        try {
          return progress(step, num_steps);
        } catch (...) {
          callback_error = std::current_exception();
          return false;
        }
      };
    std::lock_guard<std::mutex> lock(mutex);
    c10::InferenceMode inference;  // thread-local: the app's thread may have autograd on
    try {
      return translated(ErrorCode::kInternal, "", [&] {
        RecipeAttention attention(recipe);
        return pipeline.generate(t, &attention, on_step).to(at::kCPU).contiguous();
      });
    } catch (const Error&) {
      if (callback_error) std::rethrow_exception(callback_error);
      throw;
    }
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const ModelOptions& options) {
  const at::Device device = parse_device(options.device);
  const std::string path = options.path.empty() ? find_default_model() : options.path;
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::kModelNotFound, "model folder '" + path + "' does not exist");
  if (!DITKIT_HAVE_SENTENCEPIECE)
    throw Error(ErrorCode::kUnsupported, "this build of ditkit cannot tokenize prompts (built without sentencepiece)");
  const at::ScalarType dtype = run_dtype(device);
  TextToVideo pipeline = translated(ErrorCode::kModelInvalid, "cannot load model '" + path + "': ",
                                    [&] { return TextToVideo::load(path, device, dtype); });
  return Model(std::unique_ptr<Impl>(new Impl{path, std::move(pipeline), {}}));
}

GenerateOptions Model::default_options() const {
  const ModelDefaults& d = impl_->pipeline.defaults();
  GenerateOptions o;
  o.width = static_cast<int>(d.width);
  o.height = static_cast<int>(d.height);
  o.frames = static_cast<int>(d.frames);
  o.steps = d.steps;
  o.guidance = d.guidance;
  o.shift = d.shift;
  o.scheduler = d.scheduler;
  o.negative_prompt = d.negative_prompt;
  return o;
}

const std::string& Model::path() const { return impl_->path; }

std::string Model::device() const { return impl_->pipeline.transformer().device().str(); }

void Model::generate_into(const GenerateOptions& options, uint8_t* buffer, size_t buffer_size, size_t row_stride,
                          const ProgressCallback& progress) {
  if (!buffer) throw invalid("the frame buffer is NULL");
  const size_t need = checked_buffer_size(options, row_stride);
  if (buffer_size < need)
    throw Error(ErrorCode::kBufferTooSmall,
                "the frame buffer has " + std::to_string(buffer_size) + " bytes; " + std::to_string(options.frames) +
                    " frames of " + std::to_string(options.width) + "x" + std::to_string(options.height) +
                    " with a row stride of " + std::to_string(row_stride) + " bytes need " + std::to_string(need));
  const at::Tensor frames = impl_->run(options, progress);
  const size_t row = static_cast<size_t>(options.width) * 3, rows = need / row_stride;
  if (frames.numel() != static_cast<int64_t>(rows * row))
    throw Error(ErrorCode::kInternal, "the model made frames of shape " + c10::str(frames.sizes()) +
                                          ", not the " + std::to_string(options.frames) + " frames asked for");
  const uint8_t* src = frames.data_ptr<uint8_t>();
  for (size_t r = 0; r < rows; ++r) std::memcpy(buffer + r * row_stride, src + r * row, row);
}

Frames Model::generate(const GenerateOptions& options, const ProgressCallback& progress) {
  Frames out;
  out.rgb.resize(frame_buffer_size(options));
  generate_into(options, out.rgb.data(), out.rgb.size(), 0, progress);
  out.count = options.frames;
  out.width = options.width;
  out.height = options.height;
  return out;
}

void Model::generate_to_file(const GenerateOptions& options, const std::string& path,
                             const ProgressCallback& progress) {
  check_options(options);
  const VideoContainer container =
      translated(ErrorCode::kInvalidArgument, "", [&] { return video_container(path); });
  if (container == VideoContainer::kMp4 && !DITKIT_HAVE_FFMPEG)
    throw Error(ErrorCode::kUnsupported, "cannot write '" + path + "': this build has no FFmpeg, so no .mp4; "
                                         "use a .y4m file or a PNG folder (a path ending in '/')");
  std::filesystem::path target(path);
  if (!target.has_filename()) target = target.parent_path();  // "frames/": a PNG folder
  const std::filesystem::path parent = target.parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw Error(ErrorCode::kIo, "cannot write '" + path + "': the folder '" + parent.string() + "' does not exist");
  const at::Tensor frames = impl_->run(options, progress);
  VideoOptions video;
  video.fps = options.fps;
  translated(ErrorCode::kIo, "", [&] { write_video(frames, path, video); });
}

void write_png(const std::string& path, const uint8_t* rgb, int width, int height, size_t row_stride) {
  if (!rgb) throw invalid("write_png: the image is NULL");
  if (width <= 0 || height <= 0)
    throw invalid("write_png: size " + std::to_string(width) + "x" + std::to_string(height) + " is not positive");
  const size_t row = static_cast<size_t>(width) * 3;
  if (row_stride == 0) row_stride = row;
  if (row_stride < row)
    throw invalid("write_png: row stride " + std::to_string(row_stride) + " is less than width * 3 = " +
                  std::to_string(row));
  // A view of the caller's bytes; the encoder reads it strided and never writes.
  const at::Tensor image = at::from_blob(const_cast<uint8_t*>(rgb), {height, width, 3},
                                         {static_cast<int64_t>(row_stride), 3, 1}, at::kByte);
  translated(ErrorCode::kIo, "", [&] { ditkit::write_png(image, path); });
}

}  // namespace ditkit
