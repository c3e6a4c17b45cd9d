// The device a tool's --device value names, with errors that name the flag: every tool and
// dit-train read it the same way.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <stdexcept>
#include <string>

namespace ditkit {

// A GPU asked for on a machine without a usable one: the value is fine, the machine lacks it.
struct NoGpuError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// "auto": the first GPU when there is one, else the CPU; "cpu"; "cuda" (= cuda:0) or "cuda:N".
// std::invalid_argument naming `option` (the flag, or the library's option) and the value when it
// names no such device here: not one of those forms, an index past the GPUs there are, or (as
// NoGpuError) a GPU on a machine without a usable one.
c10::Device device_from_flag(const std::string& name, const std::string& option = "--device");

// The dtype a model runs in on `device`: bfloat16 on a GPU, float32 on the CPU.
inline c10::ScalarType run_dtype(c10::Device device) { return device.is_cuda() ? c10::kBFloat16 : c10::kFloat; }

}  // namespace ditkit
