#include "core/model/device.h"

#include <torch/cuda.h>

#include "base/error.h"

namespace dsee {

c10::Device device_choose(const std::string& request, int local_rank, const std::string& setting) {
  if (request == "cpu") return c10::Device(c10::kCPU);
  if (request != "auto" && request != "cuda")
    throw Error(fmt::format("{}: unknown device '{}': use auto, cpu or cuda", setting, request));
  const bool cuda = torch::cuda::is_available();
  if (!cuda) {
    DSEE_CHECK(request != "cuda",
               "{} = cuda, but no CUDA device is usable here (torch::cuda::is_available() is false); set {} to cpu "
               "or auto, or run on a GPU machine",
               setting, setting);
    return c10::Device(c10::kCPU);
  }
  const auto count = static_cast<int>(torch::cuda::device_count());
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
}

}  // namespace dsee
