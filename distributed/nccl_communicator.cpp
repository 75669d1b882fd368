// NcclCommunicator (see Note [NCCL streams] in the header).
#include "distributed/nccl_communicator.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <fmt/format.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>

#include "base/log.h"
#include "distributed/fingerprint.h"
#include "distributed/mpi_check.h"
#include "distributed/nccl_info.h"

namespace dsee {
namespace {

// ncclResult_t as a typed error: the operation, NCCL's name for the code and
// the communicator's last error text (which names the peer or the transport).
void nccl_check(ncclResult_t code, const char* operation, ncclComm_t comm = nullptr) {
  if (code == ncclSuccess) return;
  std::string detail = comm != nullptr ? ncclGetLastError(comm) : "";
  std::string hint;
  switch (code) {
    case ncclUnhandledCudaError:
      hint = " (a CUDA call failed inside NCCL)";
      break;
    case ncclSystemError:
      hint = " (a system call or the network failed; is a peer dead?)";
      break;
    case ncclInternalError:
      hint = " (an NCCL internal error)";
      break;
    case ncclInvalidArgument:
      hint = " (an invalid argument: dtype, count or root)";
      break;
    case ncclInvalidUsage:
      hint = " (invalid usage: collectives out of order or a destroyed communicator)";
      break;
    case ncclRemoteError:
      hint = " (a remote peer failed)";
      break;
    default:
      break;
  }
  throw CollectiveError(fmt::format("{} failed (nccl backend): {}{}{}{}", operation, ncclGetErrorString(code), hint,
                                    detail.empty() ? "" : ": ", detail));
}

ncclDataType_t nccl_type(const at::Tensor& tensor, const char* operation) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kChar:
      return ncclInt8;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    default:
      throw CollectiveError(
          fmt::format("{} (nccl backend): dtype {} is not supported; use float32, float64, "
                      "float16, bfloat16, int8/32/64, uint8 or bool",
                      operation, c10::toString(tensor.scalar_type())));
  }
}

}  // namespace

// The communicator handle, shared with the watchdog's abort hook and its
// polls of the asynchronous error (which may outlive the communicator when
// someone else holds the watchdog): whoever first flips `closed` aborts or
// destroys it, the other does nothing. `mutex` keeps a poll from running
// into ncclCommDestroy: `closed` is flipped under it, and a poll reads the
// communicator under it only while `closed` is false.
struct NcclHandle {
  ncclComm_t comm = nullptr;
  std::atomic<bool> closed{false};
  std::mutex mutex;

  bool close() {
    std::lock_guard lock(mutex);
    return !closed.exchange(true);
  }
  // NCCL's asynchronous error of the communicator as text (it names the
  // peer or the transport), or an empty string while there is none.
  std::string async_error() {
    std::lock_guard lock(mutex);
    if (closed) return {};
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &async) != ncclSuccess || async == ncclSuccess || async == ncclInProgress)
      return {};
    return fmt::format("NCCL reports {} ({})", ncclGetErrorString(async), ncclGetLastError(comm));
  }
};

struct NcclCommunicator::State {
  int rank = 0;
  int world_size = 1;
  int device_index = 0;
  std::shared_ptr<NcclHandle> handle = std::make_shared<NcclHandle>();
  ncclComm_t comm = nullptr;  // handle->comm, for brevity
  std::shared_ptr<Watchdog> watchdog;
  std::optional<c10::cuda::CUDAStream> stream;
  CollectiveStats stats;

  void check_tensor(const at::Tensor& tensor, const char* operation) const {
    DSEE_ASSERT(tensor.defined() && tensor.is_contiguous(), "{} (nccl backend) needs a contiguous tensor", operation);
    if (!tensor.is_cuda() || tensor.get_device() != device_index)
      throw CollectiveError(
          fmt::format("{} (nccl backend): the tensor is on {}, this rank's communicator on "
                      "cuda:{}; move it there or use the mpi backend",
                      operation, tensor.device().str(), device_index));
  }

  // Orders `launch` (which enqueues on the NCCL stream) between the compute
  // stream's past and future work, and registers it with the watchdog.
  template <typename Launch>
  void run(const char* operation, std::initializer_list<at::Tensor> tensors, std::uint64_t bytes, int root,
           Launch launch) {
    if (handle->closed)
      throw CollectiveError(fmt::format("{} (nccl backend): the communicator was aborted", operation));
    ncclResult_t async = ncclSuccess;
    nccl_check(ncclCommGetAsyncError(comm, &async), "ncclCommGetAsyncError", comm);
    nccl_check(async, "an earlier collective", comm);
    c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device_index));
    const auto compute = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index));
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(compute);
    inputs_ready.block(*stream);
    nccl_check(launch(stream->stream()), operation, comm);
    for (const at::Tensor& tensor : tensors) tensor.record_stream(*stream);
    auto finished = std::make_shared<at::cuda::CUDAEvent>();
    finished->record(*stream);
    finished->block(compute);
    stats.calls += 1;
    stats.bytes += bytes;
    stats.sequence = fingerprint_collective(stats.sequence, operation, *tensors.begin(), root);
    if (watchdog)
      watchdog->watch_until(
          operation, [finished] { return finished->query(); }, [h = handle] { return h->async_error(); });
  }
};

NcclCommunicator::NcclCommunicator(int device_index, std::shared_ptr<Watchdog> watchdog)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.device_index = device_index;
  s.watchdog = std::move(watchdog);
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &s.rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &s.world_size), "MPI_Comm_size");
  c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device_index));
  ncclUniqueId id{};
  if (s.rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  mpi_check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast of the NCCL unique id");
  {
    std::optional<Watchdog::Guard> guard;
    if (s.watchdog) guard.emplace(s.watchdog->watch("ncclCommInitRank"));
    nccl_check(ncclCommInitRank(&s.handle->comm, s.world_size, id, s.rank), "ncclCommInitRank");
  }
  s.comm = s.handle->comm;
  s.stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/true, static_cast<c10::DeviceIndex>(device_index));
  if (s.watchdog)
    s.watchdog->add_abort_hook([handle = s.handle] {
      if (handle->close()) ncclCommAbort(handle->comm);
    });
}

NcclCommunicator::~NcclCommunicator() {
  State& s = *state_;
  if (s.comm == nullptr || !s.handle->close()) return;
  // Finalize completes what is enqueued (a collective to the peers, like
  // every call here: under the watchdog), then Destroy frees the resources.
  // A failure here cannot be reported to anyone, so it is logged.
  ncclResult_t code = ncclSuccess;
  {
    std::optional<Watchdog::Guard> guard;
    if (s.watchdog) guard.emplace(s.watchdog->watch("ncclCommFinalize"));
    code = ncclCommFinalize(s.comm);
  }
  if (code == ncclSuccess) code = ncclCommDestroy(s.comm);
  if (code != ncclSuccess) spdlog::warn("closing the NCCL communicator: {}", ncclGetErrorString(code));
}

int NcclCommunicator::rank() const { return state_->rank; }
int NcclCommunicator::world_size() const { return state_->world_size; }
at::Device NcclCommunicator::device() const {
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(state_->device_index));
}
void NcclCommunicator::set_step(std::int64_t step) {
  if (state_->watchdog) state_->watchdog->set_step(step);
}
CollectiveStats NcclCommunicator::stats() const { return state_->stats; }

void NcclCommunicator::all_reduce_sum(at::Tensor& tensor) {
  State& s = *state_;
  s.check_tensor(tensor, "all_reduce");
  if (tensor.scalar_type() == at::kBool)
    throw CollectiveError("all_reduce (nccl backend): a bool tensor has no sum; convert it to uint8 or int64");
  const ncclDataType_t type = nccl_type(tensor, "all_reduce");
  const std::uint64_t bytes = tensor.numel() * tensor.element_size();
  s.run("all_reduce", {tensor}, bytes, -1, [&](cudaStream_t stream) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, ncclSum,
                         s.comm, stream);
  });
}

void NcclCommunicator::all_reduce_average(at::Tensor& tensor) {
  State& s = *state_;
  s.check_tensor(tensor, "all_reduce_average");
  if (!tensor.is_floating_point())
    throw CollectiveError(
        fmt::format("all_reduce_average (nccl backend) of a {} tensor; only floating-point "
                    "tensors have an average (use all_reduce_sum)",
                    c10::toString(tensor.scalar_type())));
  const ncclDataType_t type = nccl_type(tensor, "all_reduce_average");
  const std::uint64_t bytes = tensor.numel() * tensor.element_size();
  s.run("all_reduce_average", {tensor}, bytes, -1, [&](cudaStream_t stream) {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, ncclAvg,
                         s.comm, stream);
  });
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  State& s = *state_;
  s.check_tensor(tensor, "broadcast");
  DSEE_ASSERT(root >= 0 && root < s.world_size, "broadcast from rank {} of {}", root, s.world_size);
  const ncclDataType_t type = nccl_type(tensor, "broadcast");
  const std::uint64_t bytes = tensor.numel() * tensor.element_size();
  s.run("broadcast", {tensor}, bytes, root, [&](cudaStream_t stream) {
    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, root, s.comm,
                         stream);
  });
}

at::Tensor NcclCommunicator::all_gather(const at::Tensor& tensor) {
  State& s = *state_;
  s.check_tensor(tensor, "all_gather");
  const ncclDataType_t type = nccl_type(tensor, "all_gather");
  std::vector<int64_t> shape{s.world_size};
  shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
  at::Tensor out = at::empty(shape, tensor.options());
  const std::uint64_t bytes = tensor.numel() * tensor.element_size();
  s.run("all_gather", {tensor, out}, bytes, -1, [&](cudaStream_t stream) {
    return ncclAllGather(tensor.data_ptr(), out.data_ptr(), static_cast<size_t>(tensor.numel()), type, s.comm, stream);
  });
  return out;
}

void NcclCommunicator::barrier() {
  State& s = *state_;
  at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(device()));
  s.run("barrier", {token}, 0, -1, [&](cudaStream_t stream) {
    return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclInt32, ncclSum, s.comm, stream);
  });
  s.stream->synchronize();
}

// NCCL >= 2.9 encodes versions as major*10000 + minor*100 + patch.
static std::string nccl_version_text(int code) {
  return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100);
}

NcclInfo nccl_info() {
  int loaded = 0;
  ncclGetVersion(&loaded);
  return NcclInfo{true, nccl_version_text(NCCL_VERSION_CODE), nccl_version_text(loaded)};
}

std::unique_ptr<Communicator> nccl_communicator_make(int device_index, std::shared_ptr<Watchdog> watchdog) {
  return std::make_unique<NcclCommunicator>(device_index, std::move(watchdog));
}

}  // namespace dsee
