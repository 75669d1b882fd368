// A tensor with its name: the one type every layer uses for sets of named
// tensors (safetensors files, checkpoints, trainable parameters, what rank 0
// broadcasts). It lives in base because distributed/ moves such sets without
// seeing core/.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace dsee {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// In a meaningful order (file order, parameter order); names unique where a
// consumer says so.
using NamedTensors = std::vector<NamedTensor>;

}  // namespace dsee
