#include "distributed/gradient_sync.h"

#include <ATen/ATen.h>

#include "base/log.h"
#include "distributed/fingerprint.h"

namespace dsee {

GradientSync::GradientSync(Communicator& comm, std::vector<at::Tensor> parameters)
    : comm_(comm), parameters_(std::move(parameters)) {
  DSEE_CHECK(!parameters_.empty(), "gradient sync over no trainable parameters: mark some requires_grad");
  std::int64_t total = 0;
  std::uint64_t layout = kFingerprintSeed;
  const at::Device device = parameters_.front().device();
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const at::Tensor& p = parameters_[i];
    DSEE_CHECK(p.is_floating_point(), "trainable parameter {} is {}, not floating point", i,
               c10::toString(p.scalar_type()));
    DSEE_CHECK(p.device() == device, "trainable parameter {} is on {}, parameter 0 on {}; keep them on one device", i,
               p.device().str(), device.str());
    total += p.numel();
    const std::int64_t shape_head[2] = {static_cast<std::int64_t>(p.scalar_type()), p.dim()};
    layout = fingerprint_bytes(shape_head, sizeof shape_head, layout);
    layout = fingerprint_bytes(p.sizes().data(), p.sizes().size() * sizeof(std::int64_t), layout);
  }
  fingerprint_verify(comm_, "layout of the trainable parameters (order, shapes, dtypes)", layout);
  buffer_ = at::zeros({total}, at::TensorOptions().dtype(at::kFloat).device(device));
}

void GradientSync::average_gradients() {
  if (!logged_) {
    spdlog::info(
        "gradient sync: {} trainable tensors, {} values, {} bytes all-reduced per optimizer step "
        "({} backend, {} ranks)",
        parameters_.size(), numel(), bytes_per_step(), comm_.backend(), comm_.world_size());
    logged_ = true;
  }
  std::int64_t offset = 0;
  for (const at::Tensor& p : parameters_) {
    at::Tensor slice = buffer_.narrow(0, offset, p.numel());
    if (p.grad().defined())
      slice.copy_(p.grad().reshape({-1}));
    else
      slice.zero_();
    offset += p.numel();
  }
  comm_.all_reduce_average(buffer_);
  offset = 0;
  for (at::Tensor& p : parameters_) {
    const at::Tensor slice = buffer_.narrow(0, offset, p.numel()).view(p.sizes());
    if (p.grad().defined())
      p.mutable_grad().copy_(slice);
    else
      p.mutable_grad() = slice.to(p.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
    offset += p.numel();
  }
}

}  // namespace dsee
