// The collectives core needs, as an interface that distributed/ implements
// (MPI for CPU tensors, NCCL for CUDA tensors). Core code never sees MPI or
// NCCL: it holds a Communicator and calls these.
//
// Contract, the same for every backend:
//  - every rank calls the same operations in the same order (DDP's rule);
//    a rank that skips or reorders one leaves the others waiting until the
//    watchdog (dist.timeout_s) aborts the job;
//  - tensors are contiguous and live on device(); all-reduce and broadcast
//    work in place;
//  - failures throw CollectiveError naming the operation and the backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "base/error.h"

namespace dsee {

class CollectiveError : public Error {
 public:
  using Error::Error;
};

// What a communicator has moved since it was made: for the per-step log line
// and the bytes-per-step records of the benchmarks. `bytes` counts the
// payload each collective was given on this rank (all-gather: the input),
// not what the algorithm sends on the wire.
struct CollectiveStats {
  std::uint64_t calls = 0;
  std::uint64_t bytes = 0;
  // A running 64-bit hash of every collective in issue order (operation,
  // dtype, element count, root): equal on all ranks exactly when they issued
  // the same collectives. Comparing it across ranks (fingerprint_verify)
  // catches a skipped or reordered collective before it hangs a later step.
  std::uint64_t sequence = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl"
  // Where this backend's tensors live (CPU for mpi, the rank's GPU for nccl).
  virtual at::Device device() const = 0;

  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  // Sum, then divide by world_size (floating-point tensors only).
  virtual void all_reduce_average(at::Tensor& tensor) = 0;
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Returns [world_size, *tensor.shape], rank r's tensor at index r.
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  virtual void barrier() = 0;

  // The training step the following collectives belong to; the watchdog
  // names it when one of them hangs.
  virtual void set_step(std::int64_t step) = 0;
  virtual CollectiveStats stats() const = 0;
};

}  // namespace dsee
