// The MPI backend of core's Communicator: CPU tensors over MPI_COMM_WORLD.
#pragma once

#include "core/communicator.h"

namespace dsee {

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator();  // requires a live MpiSession
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(at::Tensor& tensor) override;
  void all_reduce_average(at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  void barrier() override;

 private:
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace dsee
