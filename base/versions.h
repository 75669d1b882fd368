// What dsee was built with and what it runs on, for `dsee env`, checkpoints
// and the start-up fingerprint.
#pragma once

#include <string>
#include <vector>

namespace dsee {

struct BuildInfo {
  std::string dsee_version;
  std::string torch_version;    // LibTorch, TORCH_VERSION at compile time
  bool cuda_available = false;  // torch::cuda::is_available()
  int cuda_device_count = 0;
  std::vector<std::string> cuda_devices;  // "cuda:0 NVIDIA H100 …" (names need the toolkit)
  std::string cuda_runtime;               // "13.0" or "" when LibTorch has no CUDA
  std::string cudnn;                      // "9.19.0" or "unavailable"
  std::string hdf5_compiled;
  std::string hdf5_loaded;
  std::string spdlog_version;
};

BuildInfo build_info();

// "major.minor.patch" from an integer of the form major*10000+minor*100+patch
// (CUDA runtime, cuDNN 9) or major*1000+minor*100+patch (cuDNN 8).
std::string version_from_code(long code);

}  // namespace dsee
