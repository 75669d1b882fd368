// Which device a process computes on.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace dsee {

// request: "auto" (CUDA when torch::cuda::is_available(), else CPU), "cpu" or
// "cuda". With CUDA, a process takes GPU local_rank % device_count, so ranks
// on one node spread over its GPUs. Asking for "cuda" where none is usable is
// a dsee::Error naming `setting`, the option or key the request came from.
c10::Device device_choose(const std::string& request, int local_rank = 0, const std::string& setting = "--device");

}  // namespace dsee
