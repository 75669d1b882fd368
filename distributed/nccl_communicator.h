// The NCCL backend of the Communicator: CUDA tensors, one GPU per rank.
// CMake compiles nccl_communicator.cpp in builds with NCCL and nccl_stub.cpp
// in builds without (nccl_info().enabled is false there, and
// communicator_backend refuses "nccl" before nccl_communicator_make could be
// reached), so callers carry no #ifdef. NcclCommunicator itself exists only
// in builds with NCCL.
//
// Note [NCCL streams]
// Collectives run on a dedicated high-priority stream of the rank's GPU, not
// on the compute stream: before each one, an event recorded on the current
// (compute) stream makes the NCCL stream wait for the tensor's producers;
// after it, an event recorded on the NCCL stream makes the compute stream
// wait before anything reads the result. Calls return once enqueued (the
// host does not wait) except barrier(), which waits. The tensors are marked
// as used on the NCCL stream so the caching allocator does not hand their
// memory out while the collective runs. The watchdog polls the "after" event
// and aborts (ncclCommAbort, then MPI_Abort) when it is not reached within
// dist.timeout_s.
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "distributed/watchdog.h"

namespace dsee {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over every rank of MPI_COMM_WORLD (requires a live
  // MpiSession: rank 0's unique id goes to the others by MPI_Bcast), on
  // CUDA device `device_index` (normally the local rank).
  NcclCommunicator(int device_index, std::shared_ptr<Watchdog> watchdog = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int world_size() const override;
  std::string backend() const override { return "nccl"; }
  at::Device device() const override;

  void all_reduce_sum(at::Tensor& tensor) override;
  void all_reduce_average(at::Tensor& tensor) override;
  void broadcast(at::Tensor& tensor, int root) override;
  at::Tensor all_gather(const at::Tensor& tensor) override;
  void barrier() override;

  void set_step(std::int64_t step) override;
  CollectiveStats stats() const override;

 private:
  struct State;  // NCCL and CUDA handles, kept out of this header
  std::unique_ptr<State> state_;
};

// A new NcclCommunicator (builds with NCCL; an internal error in others).
std::unique_ptr<Communicator> nccl_communicator_make(int device_index, std::shared_ptr<Watchdog> watchdog);

}  // namespace dsee
