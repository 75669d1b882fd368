#include "distributed/mpi_communicator.h"

#include <ATen/ATen.h>

#include "distributed/mpi_check.h"

namespace dsee {
namespace {

MPI_Datatype mpi_type(const at::Tensor& tensor, const char* operation) {
  switch (tensor.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte:
    case at::kBool: return MPI_UINT8_T;
    default:
      throw CollectiveError(fmt::format("{} (mpi backend): dtype {} is not supported; use float32, "
                                        "float64, int64, int32, uint8 or bool",
                                        operation, c10::toString(tensor.scalar_type())));
  }
}

void check_cpu_contiguous(const at::Tensor& tensor, const char* operation) {
  DSEE_ASSERT(tensor.device().is_cpu(), "{} (mpi backend) needs a CPU tensor, got {}", operation,
              tensor.device().str());
  DSEE_ASSERT(tensor.is_contiguous(), "{} (mpi backend) needs a contiguous tensor", operation);
}

}  // namespace

MpiCommunicator::MpiCommunicator() {
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
}

void MpiCommunicator::all_reduce_sum(at::Tensor& tensor) {
  check_cpu_contiguous(tensor, "all_reduce");
  DSEE_ASSERT(tensor.scalar_type() != at::kBool, "all_reduce of a bool tensor");
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()),
                          mpi_type(tensor, "all_reduce"), MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
}

void MpiCommunicator::all_reduce_average(at::Tensor& tensor) {
  DSEE_ASSERT(tensor.is_floating_point(), "all_reduce_average of a {} tensor",
              c10::toString(tensor.scalar_type()));
  all_reduce_sum(tensor);
  tensor.div_(world_size_);
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_cpu_contiguous(tensor, "broadcast");
  mpi_check(MPI_Bcast(tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor, "broadcast"), root,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
}

at::Tensor MpiCommunicator::all_gather(const at::Tensor& tensor) {
  check_cpu_contiguous(tensor, "all_gather");
  std::vector<int64_t> shape{world_size_};
  shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
  at::Tensor out = at::empty(shape, tensor.options());
  const int count = static_cast<int>(tensor.numel());
  const MPI_Datatype type = mpi_type(tensor, "all_gather");
  mpi_check(MPI_Allgather(tensor.data_ptr(), count, type, out.data_ptr(), count, type, MPI_COMM_WORLD),
            "MPI_Allgather");
  return out;
}

void MpiCommunicator::barrier() { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

}  // namespace dsee
