// The C ABI over the C++ API: every entry point catches everything, so no exception crosses, and
// leaves its message in a per-thread string.
#include "ditkit/ditkit_c.h"

#include <algorithm>
#include <iterator>
#include <new>
#include <string>

#include "ditkit/ditkit.h"
#include "ditkit_config.h"

struct ditkit_model {
  ditkit::Model model;
  ditkit::GenerateOptions defaults;  // owns the default negative prompt handed out as a char*
};

namespace {

thread_local std::string last_error;

void set_error(const char* message) noexcept {
  try {
    last_error = message;
  } catch (...) {
    last_error.clear();  // no memory for the message; the status still says what kind
  }
}

ditkit_status status_of(ditkit::ErrorCode code) {
  switch (code) {
    case ditkit::ErrorCode::kCancelled: return DITKIT_CANCELLED;
    case ditkit::ErrorCode::kInvalidArgument: return DITKIT_ERROR_INVALID_ARGUMENT;
    case ditkit::ErrorCode::kBufferTooSmall: return DITKIT_ERROR_BUFFER_TOO_SMALL;
    case ditkit::ErrorCode::kModelNotFound: return DITKIT_ERROR_MODEL_NOT_FOUND;
    case ditkit::ErrorCode::kModelInvalid: return DITKIT_ERROR_MODEL_INVALID;
    case ditkit::ErrorCode::kUnsupported: return DITKIT_ERROR_UNSUPPORTED;
    case ditkit::ErrorCode::kIo: return DITKIT_ERROR_IO;
    case ditkit::ErrorCode::kOutOfMemory: return DITKIT_ERROR_OUT_OF_MEMORY;
    case ditkit::ErrorCode::kInternal: return DITKIT_ERROR_INTERNAL;
  }
  return DITKIT_ERROR_INTERNAL;
}

// Runs f and turns whatever it throws into a status and a message.
template <typename F>
ditkit_status guarded(F&& f) noexcept {
  try {
    f();
    last_error.clear();
    return DITKIT_OK;
  } catch (const ditkit::Error& e) {
    set_error(e.what());
    return status_of(e.code());
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
    return DITKIT_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(e.what());
    return DITKIT_ERROR_INTERNAL;
  } catch (...) {
    set_error("an unknown exception");
    return DITKIT_ERROR_INTERNAL;
  }
}

ditkit::Error invalid(const std::string& message) { return ditkit::Error(ditkit::ErrorCode::kInvalidArgument, message); }

template <typename T>
void require(const T* p, const char* what) {
  if (!p) throw invalid(std::string(what) + " is NULL");
}

// The names of an enum's values, index = value; shared by to_string and from_string.
constexpr const char* kDevices[] = {"auto", "cpu", "cuda"};
constexpr const char* kSchedulers[] = {"unipc", "euler"};

template <size_t N>
const char* name_of(const char* const (&names)[N], int value) {
  return value >= 0 && value < static_cast<int>(N) ? names[value] : nullptr;
}

template <typename E, size_t N>
ditkit_status value_of(const char* const (&names)[N], const char* kind, const char* name, E* out) {
  return guarded([&] {
    require(name, "name");
    require(out, "out");
    for (size_t i = 0; i < N; ++i)
      if (std::string(name) == names[i]) {
        *out = static_cast<E>(i);
        return;
      }
    std::string known;
    for (const char* n : names) known += std::string(known.empty() ? "" : ", ") + n;
    throw invalid(std::string("unknown ") + kind + " '" + name + "' (known: " + known + ")");
  });
}

// need_prompt: generating needs one; sizing a buffer does not.
ditkit::GenerateOptions cpp_options(const ditkit_generate_options* o, bool need_prompt = true) {
  require(o, "options");
  if (need_prompt) require(o->prompt, "options->prompt");
  const char* scheduler = name_of(kSchedulers, o->scheduler);
  if (!scheduler) throw invalid("options->scheduler " + std::to_string(o->scheduler) + " is not a ditkit_scheduler");
  ditkit::GenerateOptions g;
  g.prompt = o->prompt ? o->prompt : "";
  g.negative_prompt = o->negative_prompt ? o->negative_prompt : "";
  g.width = o->width;
  g.height = o->height;
  g.frames = o->frames;
  g.steps = o->steps;
  g.guidance = o->guidance;
  g.shift = o->shift;
  g.seed = o->seed;
  g.scheduler = scheduler;
  g.attention = o->attention ? o->attention : "dense";
  g.vae_chunk = o->vae_chunk;
  g.fps = o->fps;
  return g;
}

// The C view of `o`; its strings point into `o`, and the prompt is left NULL for the app to set.
ditkit_generate_options c_options(const ditkit::GenerateOptions& o) {
  ditkit_generate_options c{};
  c.negative_prompt = o.negative_prompt.empty() ? nullptr : o.negative_prompt.c_str();
  c.width = o.width;
  c.height = o.height;
  c.frames = o.frames;
  c.steps = o.steps;
  c.guidance = o.guidance;
  c.shift = o.shift;
  c.seed = o.seed;
  const auto* known = std::find(std::begin(kSchedulers), std::end(kSchedulers), o.scheduler);
  if (known == std::end(kSchedulers))
    throw ditkit::Error(ditkit::ErrorCode::kInternal, "scheduler '" + o.scheduler + "' has no ditkit_scheduler");
  c.scheduler = static_cast<ditkit_scheduler>(known - std::begin(kSchedulers));
  c.vae_chunk = o.vae_chunk;
  c.fps = o.fps;
  return c;
}

ditkit::ProgressCallback cpp_progress(ditkit_progress_fn progress, void* user_data) {
  if (!progress) return {};
  return [progress, user_data](int step, int num_steps) { return progress(step, num_steps, user_data) == 0; };
}

}  // namespace

extern "C" {

int ditkit_version(void) { return DITKIT_VERSION; }

const char* ditkit_version_string(void) { return DITKIT_VERSION_STRING; }

const char* ditkit_status_to_string(ditkit_status status) {
  switch (status) {
    case DITKIT_OK: return "ok";
    case DITKIT_CANCELLED: return "cancelled";
    case DITKIT_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case DITKIT_ERROR_BUFFER_TOO_SMALL: return "buffer too small";
    case DITKIT_ERROR_MODEL_NOT_FOUND: return "model not found";
    case DITKIT_ERROR_MODEL_INVALID: return "model invalid";
    case DITKIT_ERROR_UNSUPPORTED: return "unsupported";
    case DITKIT_ERROR_IO: return "i/o error";
    case DITKIT_ERROR_OUT_OF_MEMORY: return "out of memory";
    case DITKIT_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* ditkit_last_error(void) { return last_error.c_str(); }

const char* ditkit_device_to_string(ditkit_device device) { return name_of(kDevices, device); }

ditkit_status ditkit_device_from_string(const char* name, ditkit_device* out) {
  return value_of(kDevices, "device", name, out);
}

const char* ditkit_scheduler_to_string(ditkit_scheduler scheduler) { return name_of(kSchedulers, scheduler); }

ditkit_status ditkit_scheduler_from_string(const char* name, ditkit_scheduler* out) {
  return value_of(kSchedulers, "scheduler", name, out);
}

void ditkit_model_options_init(ditkit_model_options* options) {
  if (options) *options = ditkit_model_options{nullptr, DITKIT_DEVICE_AUTO, 0};
}

ditkit_status ditkit_model_load(const ditkit_model_options* options, ditkit_model** out) {
  if (out) *out = nullptr;
  return guarded([&] {
    require(options, "options");
    require(out, "out");
    const char* device = name_of(kDevices, options->device);
    if (!device) throw invalid("options->device " + std::to_string(options->device) + " is not a ditkit_device");
    if (options->device_index < 0)
      throw invalid("options->device_index must be 0 or more, got " + std::to_string(options->device_index));
    ditkit::ModelOptions m;
    m.path = options->path ? options->path : "";
    m.device = device;
    if (options->device == DITKIT_DEVICE_CUDA) m.device += ":" + std::to_string(options->device_index);
    ditkit::Model model = ditkit::Model::load(m);
    ditkit::GenerateOptions defaults = model.default_options();
    *out = new ditkit_model{std::move(model), std::move(defaults)};
  });
}

void ditkit_model_free(ditkit_model* model) { delete model; }

void ditkit_generate_options_init(ditkit_generate_options* options) {
  if (!options) return;
  try {
    *options = c_options(ditkit::GenerateOptions{});
  } catch (...) {
    *options = ditkit_generate_options{};  // cannot happen (the defaults are known), and must not escape
  }
}

ditkit_status ditkit_model_default_options(const ditkit_model* model, ditkit_generate_options* options) {
  return guarded([&] {
    require(model, "model");
    require(options, "options");
    *options = c_options(model->defaults);
  });
}

ditkit_status ditkit_frames_size(const ditkit_generate_options* options, size_t row_stride, size_t* bytes) {
  if (bytes) *bytes = 0;
  return guarded([&] {
    require(bytes, "bytes");
    *bytes = ditkit::frame_buffer_size(cpp_options(options, /*need_prompt=*/false), row_stride);
  });
}

ditkit_status ditkit_generate(ditkit_model* model, const ditkit_generate_options* options, uint8_t* buffer,
                              size_t buffer_size, size_t row_stride, ditkit_progress_fn progress, void* user_data) {
  return guarded([&] {
    require(model, "model");
    model->model.generate_into(cpp_options(options), buffer, buffer_size, row_stride,
                               cpp_progress(progress, user_data));
  });
}

ditkit_status ditkit_generate_to_file(ditkit_model* model, const ditkit_generate_options* options, const char* path,
                                      ditkit_progress_fn progress, void* user_data) {
  return guarded([&] {
    require(model, "model");
    require(path, "path");
    model->model.generate_to_file(cpp_options(options), path, cpp_progress(progress, user_data));
  });
}

ditkit_status ditkit_write_png(const char* path, const uint8_t* rgb, int width, int height, size_t row_stride) {
  return guarded([&] {
    require(path, "path");
    ditkit::write_png(path, rgb, width, height, row_stride);
  });
}

}  // extern "C"
