#include "distributed/communicator_factory.h"

#include "distributed/mpi_communicator.h"
#include "distributed/nccl_communicator.h"
#include "distributed/nccl_info.h"
#include "distributed/watchdog.h"

namespace dsee {

bool nccl_available() { return nccl_info().enabled; }

std::string communicator_backend(const CommunicatorOptions& options) {
  const std::string& requested = options.backend;
  if (requested != "auto" && requested != "mpi" && requested != "nccl")
    throw Error(fmt::format("dist.backend = \"{}\" is not a backend; use auto, mpi or nccl", requested));
  const bool cuda = options.device.is_cuda();
  if (requested == "mpi" || (requested == "auto" && !cuda)) return "mpi";
  if (!cuda)
    throw Error(
        fmt::format("dist.backend = \"nccl\" needs a CUDA device, but the run uses {}; set run.device = "
                    "cuda or dist.backend = mpi",
                    options.device.str()));
  if (!nccl_available())
    throw Error(std::string("dsee was built without NCCL (no CUDA toolkit or no nccl.h at configure time), so ") +
                (requested == "auto" ? "the CUDA run has no GPU backend" : "dist.backend = nccl cannot work") +
                "; rebuild with NCCL or set dist.backend = mpi (slow: collectives go through host memory)");
  return "nccl";
}

std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options,
                                                std::shared_ptr<Watchdog> watchdog) {
  const std::string backend = communicator_backend(options);
  if (!watchdog) watchdog = std::make_shared<Watchdog>(options.timeout_s);
  if (backend == "mpi") return std::make_unique<MpiCommunicator>(std::move(watchdog));
  const int index = options.device.has_index() ? options.device.index() : options.local_rank;
  return nccl_communicator_make(index, std::move(watchdog));
}

}  // namespace dsee
