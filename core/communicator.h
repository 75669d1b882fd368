// The collectives core needs, as an interface that distributed/ implements
// (MPI for CPU tensors, NCCL for CUDA tensors). Core code never sees MPI or
// NCCL: it holds a Communicator and calls these.
//
// Contract, the same for every backend:
//  - every rank calls the same operations in the same order (DDP's rule);
//    a rank that skips or reorders one leaves the others waiting;
//  - tensors are contiguous and live on the backend's device; all-reduce and
//    broadcast work in place;
//  - failures throw CollectiveError naming the operation and the backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "data/error.h"

namespace dsee {

class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl"

  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  // Sum, then divide by world_size (floating-point tensors only).
  virtual void all_reduce_average(at::Tensor& tensor) = 0;
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Returns [world_size, *tensor.shape], rank r's tensor at index r.
  virtual at::Tensor all_gather(const at::Tensor& tensor) = 0;
  virtual void barrier() = 0;
};

}  // namespace dsee
