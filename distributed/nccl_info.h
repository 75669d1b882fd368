// The NCCL dsee was compiled against and the one the process loaded (they
// must agree: torch_cuda and dsee share one libnccl.so.2 in a process).
#pragma once

#include <string>

namespace dsee {

struct NcclInfo {
  bool enabled = false;  // built with the NCCL backend
  std::string compiled;  // from nccl.h, "" when disabled
  std::string loaded;    // from ncclGetVersion(), "" when disabled
};

NcclInfo nccl_info();

}  // namespace dsee
