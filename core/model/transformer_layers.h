// The pieces BERT, RoBERTa and GPT-2 share: layer norm, the feed-forward
// activation, and multi-head attention over projected queries/keys/values.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/model/linear.h"
#include "core/model/model_config.h"

namespace dsee {

struct LayerNorm {
  at::Tensor weight, bias;  // [hidden]
  double eps = 1e-5;
  at::Tensor forward(const at::Tensor& x) const;
};

// Uninitialised parameters of the given shape (a model's tensors before load).
LayerNorm layer_norm_empty(std::int64_t hidden, double eps, const at::TensorOptions& options);
Linear linear_empty(std::int64_t out, std::int64_t in, const at::TensorOptions& options);

at::Tensor activation_apply(Activation activation, const at::Tensor& x);

// [batch, seq, heads * head_dim] → [batch, heads, seq, head_dim] and back.
at::Tensor heads_split(const at::Tensor& x, std::int64_t heads);
at::Tensor heads_merge(const at::Tensor& x);

// softmax(q·kᵀ·scale + mask)·v through at::scaled_dot_product_attention.
// q [batch, heads, q_len, d], k/v [batch, heads, k_len, d]; `allowed` is a
// bool mask broadcastable to [batch, heads, q_len, k_len] (true: attend) or
// undefined; `causal` (only with q_len == k_len and no mask) lets the kernel
// build the causal mask itself. See Note [Attention kernel] in the .cpp.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed,
                     bool causal, double scale);

// Row indices of a projection that keeps `kept` heads (positions among the
// layer's current heads) of `head_dim` rows each, in `blocks` stacked blocks
// of `current_heads * head_dim` rows (3 for GPT-2's c_attn, else 1).
at::Tensor head_rows(const std::vector<std::int64_t>& kept, std::int64_t current_heads, std::int64_t head_dim,
                     std::int64_t blocks);

}  // namespace dsee
