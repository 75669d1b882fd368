// AdamW over named fp32 tensors, with the arithmetic of torch.optim.AdamW's
// single-tensor path (the one torch takes on CPU), and global-norm gradient
// clipping as torch.nn.utils.clip_grad_norm_. Shaped as a plain list of
// (name, tensor), not one flat buffer, so the state exports under parameter
// names for checkpoints.
//
// One step, per parameter p with gradient g (Note [AdamW operation order]):
//   t += 1;  p *= 1 - lr·wd  (decoupled; wd = 0 for excluded names)
//   m = lerp(m, g, 1 - β1);  v = v·β2 + (1 - β2)·g²
//   p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + ε)
// A parameter whose .grad() is undefined is skipped (its t does not move),
// as torch does.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/named_tensor.h"
#include "core/tuning/tuning.h"

namespace dsee {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // No decay for biases and normalisation weights, by name (the rule of
  // transformers' Trainer; see parameter_decay_excluded).
  bool exclude_bias_and_norm = true;
};

// True for names the transformers Trainer keeps out of weight decay: the
// lower-cased name contains "bias", "layernorm" or "rmsnorm", or has a
// component "norm" / ending in "_norm"; plus GPT-2's LayerNorm modules
// (ln_1, ln_2, ln_f), which transformers excludes by module type.
bool parameter_decay_excluded(const std::string& name);

class AdamW {
 public:
  // `parameters`: fp32 tensors (any device), unique names; dsee::Error otherwise.
  AdamW(NamedTensors parameters, AdamWOptions options);

  // One update at learning rate `lr` from each parameter's .grad().
  void step(double lr);
  // Sets every defined gradient to zero (kept allocated).
  void zero_grad();

  const NamedTensors& parameters() const { return parameters_; }
  const AdamWOptions& options() const { return options_; }
  // Weight decay applied to parameter i (0 where excluded).
  double weight_decay_of(std::size_t i) const { return decay_[i]; }

  // State for checkpoints: for every parameter "<name>.exp_avg", "<name>.exp_avg_sq"
  // (the parameter's shape, fp32, on its device) and "<name>.step" (int64 scalar, CPU).
  // Parameters that never stepped export zeros.
  NamedTensors state_export() const;
  // Inverse of state_export; every name must be present with the right shape
  // and dtype, and no unknown name may appear (dsee::Error naming the tensor).
  void state_import(const NamedTensors& state);

 private:
  NamedTensors parameters_;
  AdamWOptions options_;
  std::vector<double> decay_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<std::int64_t> steps_;
};

// The global 2-norm of the defined gradients of `parameters` (as if all were
// one vector), as torch.nn.utils.get_total_norm: fp32 0-dim tensor on the
// first parameter's device; 0 with no gradient.
at::Tensor grad_total_norm(const NamedTensors& parameters);

// torch.nn.utils.clip_grad_norm_(parameters, max_norm): returns the total
// norm (before clipping) and scales gradients by min(1, max_norm / (norm + 1e-6)).
// max_norm <= 0 means no clipping (the norm is still returned). A non-finite
// norm leaves the gradients untouched (the caller stops or skips the step;
// torch would fill them with NaN).
double grad_clip_norm(const NamedTensors& parameters, double max_norm);

}  // namespace dsee
