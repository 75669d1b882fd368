#include "base/versions.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <spdlog/version.h>
#include <torch/cuda.h>
#include <torch/version.h>

#ifdef DSEE_HAVE_CUDA_TOOLKIT
#include <ATen/cuda/CUDAContext.h>
#endif

namespace dsee {

std::string version_from_code(long code) {
  if (code <= 0) return "unavailable";
  if (code >= 10000) return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100);
  return fmt::format("{}.{}.{}", code / 1000, code / 100 % 10, code % 100);
}

BuildInfo build_info() {
  BuildInfo info;
  info.dsee_version = DSEE_VERSION;
  info.torch_version = TORCH_VERSION;
  info.cuda_available = torch::cuda::is_available();
  info.cuda_device_count = info.cuda_available ? int(torch::cuda::device_count()) : 0;
  const auto& hooks = at::detail::getCUDAHooks();
  if (hooks.hasCUDART()) {
    const long runtime = hooks.versionCUDART();
    info.cuda_runtime = fmt::format("{}.{}", runtime / 1000, runtime / 10 % 100);
  }
  info.cudnn = info.cuda_available && hooks.hasCuDNN() ? version_from_code(hooks.versionCuDNN()) : "unavailable";
  for (int i = 0; i < info.cuda_device_count; ++i) {
#ifdef DSEE_HAVE_CUDA_TOOLKIT
    info.cuda_devices.push_back(fmt::format("cuda:{} {}", i, at::cuda::getDeviceProperties(i)->name));
#else
    info.cuda_devices.push_back(fmt::format("cuda:{}", i));
#endif
  }
  info.hdf5_compiled = fmt::format("{}.{}.{}", H5_VERS_MAJOR, H5_VERS_MINOR, H5_VERS_RELEASE);
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  info.hdf5_loaded = fmt::format("{}.{}.{}", major, minor, release);
  info.spdlog_version = fmt::format("{}.{}.{}", SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH);
  return info;
}

}  // namespace dsee
