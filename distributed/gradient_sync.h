// Data-parallel gradient averaging over the trainable parameters only.
//
// One flat float32 buffer holds every trainable gradient (allocated once, on
// the parameters' device); average_gradients() copies the gradients in, runs
// one all_reduce_average over the whole buffer and copies the averages back
// (into float32, float16 or bfloat16 gradients alike). Call it once per
// optimizer step, after the last accumulation micro-step's backward and
// before clipping; micro-steps issue no collective. A parameter without a
// gradient on this rank contributes zeros and receives the average, so every
// rank issues the same collective with the same layout. The layout (names
// are not needed: order, shapes, dtypes) is checked across ranks by
// fingerprint when the sync is made.
//
// Core's training loop does not see this class (layering): recipes makes it
// and hands the loop a callback.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "distributed/communicator.h"

namespace dsee {

class GradientSync {
 public:
  // A collective (the layout check): every rank calls it with its
  // parameters in the same order.
  GradientSync(Communicator& comm, std::vector<at::Tensor> parameters);

  void average_gradients();

  std::int64_t numel() const { return buffer_.numel(); }
  std::uint64_t bytes_per_step() const { return static_cast<std::uint64_t>(numel()) * sizeof(float); }
  // [numel()] float32: the last averaged gradients, parameter after parameter.
  const at::Tensor& buffer() const { return buffer_; }

 private:
  Communicator& comm_;
  std::vector<at::Tensor> parameters_;
  at::Tensor buffer_;
  bool logged_ = false;
};

}  // namespace dsee
