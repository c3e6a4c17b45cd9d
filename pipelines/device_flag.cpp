#include "pipelines/device_flag.h"

#include <ATen/Context.h>

#include <optional>
#include <stdexcept>

namespace ditkit {

c10::Device device_from_flag(const std::string& name, const std::string& option) {
  if (name == "auto") return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  const std::string what = option + ": '" + name + "'";
  std::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const std::exception&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda())) throw std::invalid_argument(what + " is not auto, cpu or cuda[:N]");
  if (device->is_cpu()) return *device;
  // Checked here: CUDA's own error for a missing GPU or driver does not say which flag asked for it.
  const int64_t gpus = at::hasCUDA() ? at::getNumGPUs() : 0;
  if (gpus == 0) throw NoGpuError(what + ": this machine has no usable CUDA GPU (cpu runs here)");
  const int64_t index = device->has_index() ? device->index() : 0;
  if (index >= gpus)
    throw std::invalid_argument(what + ": this machine has " + std::to_string(gpus) + " CUDA GPU" +
                                (gpus == 1 ? "" : "s") + " (cuda:0" + (gpus > 1 ? " to cuda:" + std::to_string(gpus - 1) : "") + ")");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace ditkit
