// Chooses and builds the communicator for a run.
//
// backend "auto" (recipe key dist.backend) picks by the device the model
// lives on: NCCL for CUDA, MPI for the CPU. "mpi" and "nccl" override it:
// "mpi" with a CUDA device stages every collective through host memory;
// "nccl" needs a CUDA device and a build with NCCL. Every communicator it
// makes has a watchdog: the one given, or a new one with the given timeout.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "distributed/communicator.h"

namespace dsee {

class Watchdog;

struct CommunicatorOptions {
  std::string backend = "auto";              // auto, mpi, nccl
  at::Device device = at::Device(at::kCPU);  // a CUDA device without index means the local rank's GPU
  int local_rank = 0;
  double timeout_s = 600;  // dist.timeout_s
};

// True when this build has the NCCL backend.
bool nccl_available();

// The backend `options` resolve to ("mpi" or "nccl"); throws dsee::Error
// saying what to change when the choice cannot work (unknown name, nccl on
// a CPU device, nccl in a build without it).
std::string communicator_backend(const CommunicatorOptions& options);

// Requires a live MpiSession. `watchdog` guards the collectives (shared with
// whoever sets long waits on it, distributed/ranks.h); null: a new one with
// options.timeout_s.
std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options,
                                                std::shared_ptr<Watchdog> watchdog = nullptr);

}  // namespace dsee
