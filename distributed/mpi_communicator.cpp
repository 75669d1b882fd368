#include "distributed/mpi_communicator.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "distributed/fingerprint.h"
#include "distributed/mpi_check.h"

namespace dsee {
namespace {

// MPI counts are int; larger tensors go in chunks of this many elements.
constexpr std::int64_t kMaxChunk = std::int64_t{1} << 30;

MPI_Datatype mpi_type(const at::Tensor& tensor, const char* operation) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kHalf:
    case at::kBFloat16:
      return MPI_UINT16_T;  // moved as words; summed by our ops
    case at::kLong:
      return MPI_INT64_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kShort:
      return MPI_INT16_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kByte:
    case at::kBool:
      return MPI_UINT8_T;
    default:
      throw CollectiveError(
          fmt::format("{} (mpi backend): dtype {} is not supported; use float32, float64, "
                      "float16, bfloat16, int8/16/32/64, uint8 or bool",
                      operation, c10::toString(tensor.scalar_type())));
  }
}

template <typename Half>
void sum_16bit(void* in, void* inout, int* length, MPI_Datatype*) {
  const auto* a = static_cast<const Half*>(in);
  auto* b = static_cast<Half*>(inout);
  for (int i = 0; i < *length; ++i) b[i] = Half(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

void check_contiguous(const at::Tensor& tensor, const char* operation) {
  DSEE_ASSERT(tensor.defined(), "{} (mpi backend) of an undefined tensor", operation);
  DSEE_ASSERT(tensor.is_contiguous(), "{} (mpi backend) needs a contiguous tensor", operation);
}

// The tensor itself when on the CPU, else a host copy (see the header).
at::Tensor host_view(const at::Tensor& tensor) { return tensor.device().is_cpu() ? tensor : tensor.cpu(); }

void copy_back(at::Tensor& tensor, const at::Tensor& host) {
  if (!tensor.device().is_cpu()) tensor.copy_(host);
}

// Calls `call(pointer, count)` over chunks of at most kMaxChunk elements.
template <typename Call>
void for_each_chunk(const at::Tensor& host, Call call) {
  auto* bytes = static_cast<char*>(host.data_ptr());
  for (std::int64_t offset = 0; offset < host.numel(); offset += kMaxChunk)
    call(bytes + offset * host.element_size(), static_cast<int>(std::min(kMaxChunk, host.numel() - offset)));
}

std::optional<Watchdog::Guard> guard(Watchdog* watchdog, const char* operation) {
  if (watchdog == nullptr) return std::nullopt;
  return watchdog->watch(operation);
}

}  // namespace

MpiCommunicator::MpiCommunicator(std::shared_ptr<Watchdog> watchdog) : watchdog_(std::move(watchdog)) {
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
  mpi_check(MPI_Op_create(&sum_16bit<c10::Half>, 1, &sum_half_), "MPI_Op_create");
  mpi_check(MPI_Op_create(&sum_16bit<c10::BFloat16>, 1, &sum_bfloat16_), "MPI_Op_create");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Op_free(&sum_half_);
  MPI_Op_free(&sum_bfloat16_);
}

void MpiCommunicator::set_step(std::int64_t step) {
  if (watchdog_) watchdog_->set_step(step);
}

void MpiCommunicator::count(const char* operation, const at::Tensor& tensor, int root) {
  stats_.calls += 1;
  if (tensor.defined()) stats_.bytes += static_cast<std::uint64_t>(tensor.numel()) * tensor.element_size();
  stats_.sequence = fingerprint_collective(stats_.sequence, operation, tensor, root);
}

void MpiCommunicator::all_reduce_sum(at::Tensor& tensor) {
  check_contiguous(tensor, "all_reduce");
  if (tensor.scalar_type() == at::kBool)
    throw CollectiveError("all_reduce (mpi backend): a bool tensor has no sum; convert it to uint8 or int64");
  const MPI_Datatype type = mpi_type(tensor, "all_reduce");
  const MPI_Op op = tensor.scalar_type() == at::kHalf       ? sum_half_
                    : tensor.scalar_type() == at::kBFloat16 ? sum_bfloat16_
                                                            : MPI_SUM;
  count("all_reduce", tensor);
  at::Tensor host = host_view(tensor);
  const auto guarded = guard(watchdog_.get(), "all_reduce");
  for_each_chunk(host, [&](void* data, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, n, type, op, MPI_COMM_WORLD), "MPI_Allreduce");
  });
  copy_back(tensor, host);
}

void MpiCommunicator::all_reduce_average(at::Tensor& tensor) {
  if (!tensor.is_floating_point())
    throw CollectiveError(
        fmt::format("all_reduce_average (mpi backend) of a {} tensor; only floating-point "
                    "tensors have an average (use all_reduce_sum)",
                    c10::toString(tensor.scalar_type())));
  all_reduce_sum(tensor);
  tensor.div_(world_size_);
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_contiguous(tensor, "broadcast");
  DSEE_ASSERT(root >= 0 && root < world_size_, "broadcast from rank {} of {}", root, world_size_);
  const MPI_Datatype type = mpi_type(tensor, "broadcast");
  count("broadcast", tensor, root);
  at::Tensor host = host_view(tensor);
  const auto guarded = guard(watchdog_.get(), "broadcast");
  for_each_chunk(host,
                 [&](void* data, int n) { mpi_check(MPI_Bcast(data, n, type, root, MPI_COMM_WORLD), "MPI_Bcast"); });
  copy_back(tensor, host);
}

at::Tensor MpiCommunicator::all_gather(const at::Tensor& tensor) {
  check_contiguous(tensor, "all_gather");
  if (tensor.numel() * world_size_ > INT_MAX)
    throw CollectiveError(fmt::format("all_gather (mpi backend): {} elements on {} ranks exceed MPI's int count",
                                      tensor.numel(), world_size_));
  const MPI_Datatype type = mpi_type(tensor, "all_gather");
  std::vector<int64_t> shape{world_size_};
  shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
  const at::Tensor host = host_view(tensor);
  at::Tensor out = at::empty(shape, host.options());
  const int n = static_cast<int>(tensor.numel());
  count("all_gather", tensor);
  {
    const auto guarded = guard(watchdog_.get(), "all_gather");
    mpi_check(MPI_Allgather(host.data_ptr(), n, type, out.data_ptr(), n, type, MPI_COMM_WORLD), "MPI_Allgather");
  }
  return out.to(tensor.device());
}

void MpiCommunicator::barrier() {
  count("barrier", at::Tensor());
  const auto guarded = guard(watchdog_.get(), "barrier");
  mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

}  // namespace dsee
