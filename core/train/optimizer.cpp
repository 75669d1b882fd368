// AdamW and gradient clipping with torch's arithmetic (see optimizer.h).
#include "core/train/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <regex>
#include <set>

#include "base/error.h"
#include "base/shape_text.h"

namespace dsee {

// Note [AdamW operation order]
// torch.optim.AdamW (torch 2.11: Adam with decoupled_weight_decay) takes its
// single-tensor path on CPU (foreach kernels are CUDA-only for optimizers).
// Matching it bit for bit needs the same ATen ops with the same double
// scalars in the same order:
//   param.mul_(1 - lr*wd)
//   exp_avg.lerp_(grad, 1 - beta1)
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
//   bc1 = 1 - beta1**t; bc2 = 1 - beta2**t          (Python floats: doubles)
//   denom = (exp_avg_sq.sqrt() / bc2**0.5).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-(lr / bc1))
// ε therefore sits outside the square root and after the bias correction of
// v. On CUDA torch defaults to the foreach path, which forms the same terms
// in a different order (differences of an ulp); dsee always uses this order.

bool parameter_decay_excluded(const std::string& name) {
  std::string lower = name;
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.find("bias") != std::string::npos || lower.find("layernorm") != std::string::npos ||
      lower.find("rmsnorm") != std::string::npos)
    return true;
  static const std::regex norm_component(R"((^|\.)norm($|\.)|_norm($|\.)|(^|\.)ln_(\d+|f)\.)");
  return std::regex_search(lower, norm_component);
}

AdamW::AdamW(NamedTensors parameters, AdamWOptions options) : parameters_(std::move(parameters)), options_(options) {
  DSEE_CHECK(options_.beta1 >= 0 && options_.beta1 < 1 && options_.beta2 >= 0 && options_.beta2 < 1,
             "AdamW betas must lie in [0, 1), got ({}, {})", options_.beta1, options_.beta2);
  DSEE_CHECK(options_.eps >= 0 && options_.weight_decay >= 0,
             "AdamW eps and weight_decay must be >= 0, got eps {} and weight_decay {}", options_.eps,
             options_.weight_decay);
  std::set<std::string> seen;
  for (const auto& [name, tensor] : parameters_) {
    DSEE_CHECK(seen.insert(name).second, "AdamW: parameter '{}' is listed twice", name);
    DSEE_CHECK(tensor.defined() && tensor.scalar_type() == at::kFloat,
               "AdamW: parameter '{}' must be a defined float32 tensor, got {}", name,
               tensor.defined() ? std::string(c10::toString(tensor.scalar_type())) : "undefined");
    decay_.push_back(options_.exclude_bias_and_norm && parameter_decay_excluded(name) ? 0.0 : options_.weight_decay);
    exp_avg_.push_back(at::zeros_like(tensor, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(tensor, at::MemoryFormat::Preserve));
    steps_.push_back(0);
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor param = parameters_[i].tensor;
    const at::Tensor& grad = param.grad();
    if (!grad.defined()) continue;
    DSEE_CHECK(grad.sizes() == param.sizes(), "AdamW: gradient of '{}' has shape {}, the parameter {}",
               parameters_[i].name, shape_text(grad.sizes()), shape_text(param.sizes()));
    const auto t = static_cast<double>(++steps_[i]);
    if (decay_[i] != 0) param.mul_(1 - lr * decay_[i]);
    exp_avg_[i].lerp_(grad, 1 - beta1);
    exp_avg_sq_[i].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    const double bias_correction1 = 1 - std::pow(beta1, t);
    const double bias_correction2 = 1 - std::pow(beta2, t);
    const double step_size = lr / bias_correction1;
    const at::Tensor denom = (exp_avg_sq_[i].sqrt() / std::pow(bias_correction2, 0.5)).add_(options_.eps);
    param.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& parameter : parameters_) {
    at::Tensor grad = parameter.tensor.mutable_grad();
    if (grad.defined()) grad.zero_();
  }
}

NamedTensors AdamW::state_export() const {
  NamedTensors state;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    state.push_back({name + ".exp_avg", exp_avg_[i]});
    state.push_back({name + ".exp_avg_sq", exp_avg_sq_[i]});
    state.push_back({name + ".step", at::scalar_tensor(steps_[i], at::kLong)});
  }
  return state;
}

void AdamW::state_import(const NamedTensors& state) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, tensor] : state)
    DSEE_CHECK(by_name.emplace(name, tensor).second, "optimizer state: '{}' appears twice", name);
  auto take = [&](const std::string& name, const at::Tensor& like) {
    auto it = by_name.find(name);
    DSEE_CHECK(it != by_name.end(),
               "optimizer state: '{}' is missing (the checkpoint was written for other parameters?)", name);
    at::Tensor tensor = it->second;
    by_name.erase(it);
    DSEE_CHECK(tensor.sizes() == like.sizes() && tensor.scalar_type() == like.scalar_type(),
               "optimizer state: '{}' is {} {}, expected {} {}", name, c10::toString(tensor.scalar_type()),
               shape_text(tensor.sizes()), c10::toString(like.scalar_type()), shape_text(like.sizes()));
    return tensor;
  };
  // Validate everything before changing anything.
  std::vector<at::Tensor> avg, avg_sq;
  std::vector<std::int64_t> steps;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    avg.push_back(take(name + ".exp_avg", exp_avg_[i]));
    avg_sq.push_back(take(name + ".exp_avg_sq", exp_avg_sq_[i]));
    const at::Tensor step = take(name + ".step", at::scalar_tensor(0, at::kLong));
    steps.push_back(step.item<std::int64_t>());
    DSEE_CHECK(steps.back() >= 0, "optimizer state: '{}.step' is negative ({})", name, steps.back());
  }
  DSEE_CHECK(by_name.empty(), "optimizer state: '{}' belongs to no parameter of this optimizer",
             by_name.begin()->first);
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    exp_avg_[i].copy_(avg[i]);
    exp_avg_sq_[i].copy_(avg_sq[i]);
    steps_[i] = steps[i];
  }
}

// torch.nn.utils.get_total_norm on one device and dtype: per-tensor norms
// from _foreach_norm (which clip_grad_norm_ uses on CPU and CUDA), then the
// norm of their stack.
at::Tensor grad_total_norm(const NamedTensors& parameters) {
  std::vector<at::Tensor> grads;
  for (const auto& parameter : parameters)
    if (parameter.tensor.grad().defined()) grads.push_back(parameter.tensor.grad());
  if (grads.empty()) return at::scalar_tensor(0.0, at::kFloat);
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  return at::linalg_vector_norm(at::stack(norms), 2);
}

double grad_clip_norm(const NamedTensors& parameters, double max_norm) {
  const at::Tensor total = grad_total_norm(parameters);
  const double norm = total.item<double>();
  if (max_norm <= 0 || !std::isfinite(norm)) return norm;
  at::NoGradGuard no_grad;
  // Python's `max_norm / tensor` is reciprocal(tensor) * max_norm.
  const at::Tensor coef = at::clamp_max(at::reciprocal(total + 1e-6) * max_norm, 1.0);
  std::vector<at::Tensor> grads;
  for (const auto& parameter : parameters)
    if (parameter.tensor.grad().defined()) grads.push_back(parameter.tensor.mutable_grad());
  at::_foreach_mul_(grads, coef.to(grads.front().device()));
  return norm;
}

}  // namespace dsee
