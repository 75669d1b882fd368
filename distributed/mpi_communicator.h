// The MPI backend of core's Communicator: tensors over MPI_COMM_WORLD.
//
// Meant for CPU tensors; a CUDA tensor is staged through host memory (slow,
// for checks and for machines without NCCL). float16 and bfloat16 move as
// 16-bit words and are summed by MPI operations of our own (each element
// widened to float, added, rounded back), since MPI has no such types.
// Supported dtypes: float32/64, float16, bfloat16, int8/16/32/64, uint8 and
// bool (bool: broadcast and all-gather only). Anything else throws
// CollectiveError naming the dtype.
#pragma once

#include <mpi.h>

#include <memory>

#include "distributed/communicator.h"
#include "distributed/watchdog.h"

namespace dsee {

class MpiCommunicator final : public Communicator {
 public:
  // Requires a live MpiSession. With a watchdog every collective is guarded.
  explicit MpiCommunicator(std::shared_ptr<Watchdog> watchdog = nullptr);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "mpi"; }
  at::Device device() const override { return at::Device(at::kCPU); }

  void all_reduce_sum(at::Tensor& tensor) override;
  void all_reduce_average(at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  void barrier() override;

  void set_step(std::int64_t step) override;
  CollectiveStats stats() const override { return stats_; }

 private:
  void count(const char* operation, const at::Tensor& tensor, int root = -1);

  int rank_ = 0;
  int world_size_ = 1;
  std::shared_ptr<Watchdog> watchdog_;
  CollectiveStats stats_;
  MPI_Op sum_half_ = MPI_OP_NULL;
  MPI_Op sum_bfloat16_ = MPI_OP_NULL;
};

}  // namespace dsee
