// The NCCL backend in a build without NCCL (no CUDA toolkit or no nccl.h at
// configure time): nothing to report, nothing to make. See nccl_communicator.h.
#include "base/error.h"
#include "distributed/nccl_communicator.h"
#include "distributed/nccl_info.h"

namespace dsee {

NcclInfo nccl_info() { return NcclInfo{}; }

// NOLINTNEXTLINE(performance-unnecessary-value-param): nccl_communicator.cpp's signature, which keeps `watchdog`
std::unique_ptr<Communicator> nccl_communicator_make(int device_index, std::shared_ptr<Watchdog> watchdog) {
  DSEE_ASSERT(false, "communicator_backend chose nccl in a build without it (device {})", device_index);
  return nullptr;
}

}  // namespace dsee
