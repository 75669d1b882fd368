// Shared transformer pieces; see transformer_layers.h.
#include "core/model/transformer_layers.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace dsee {

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

LayerNorm layer_norm_empty(std::int64_t hidden, double eps, const at::TensorOptions& options) {
  return {at::empty({hidden}, options), at::empty({hidden}, options), eps};
}

Linear linear_empty(std::int64_t out, std::int64_t in, const at::TensorOptions& options) {
  return {at::empty({out, in}, options), at::empty({out}, options), {}, nullptr};
}

at::Tensor activation_apply(Activation activation, const at::Tensor& x) {
  switch (activation) {
    case Activation::gelu:
      return at::gelu(x);
    case Activation::gelu_new:
      return at::gelu(x, "tanh");
    case Activation::relu:
      return at::relu(x);
  }
  DSEE_ASSERT(false, "unknown activation");
}

at::Tensor heads_split(const at::Tensor& x, std::int64_t heads) {
  const auto batch = x.size(0), seq = x.size(1);
  return x.view({batch, seq, heads, x.size(2) / heads}).transpose(1, 2);
}

at::Tensor heads_merge(const at::Tensor& x) {
  const auto batch = x.size(0), heads = x.size(1), seq = x.size(2), dim = x.size(3);
  return x.transpose(1, 2).reshape({batch, seq, heads * dim});
}

// Note [Attention kernel]
// ~~~~~~~~~~~~~~~~~~~~~~~
// at::scaled_dot_product_attention picks the CPU flash kernel (fp32/bf16,
// any head size, boolean masks) or the math path. Against transformers'
// eager attention (matmul, additive finfo.min mask, softmax, matmul) the
// fp32 results agree to ≤ 2.3e-7 relative on the small parity configs and
// ≤ 1.2e-6 at BERT-base / GPT-2-small dimensions (tests/parity), inside the
// 1e-5 budget, so dsee uses it everywhere, including GPT-2 with a cache;
// there is no place where the eager formulation is needed for fp32. The
// mask is boolean (true: attend): a fully masked row would give NaN, which
// cannot happen here because every sequence has at least one token and
// padding is on the right (a padded query still sees the real tokens); GPT-2's
// left padding in generation lets a padding query see its causal keys instead.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed,
                     bool causal, double scale) {
  DSEE_ASSERT(!(causal && allowed.defined()), "give the causal mask either way, not both");
  return at::scaled_dot_product_attention(
      q, k, v, allowed.defined() ? std::optional<at::Tensor>(allowed) : std::nullopt, 0.0, causal, scale);
}

at::Tensor head_rows(const std::vector<std::int64_t>& kept, std::int64_t current_heads, std::int64_t head_dim,
                     std::int64_t blocks) {
  std::vector<std::int64_t> rows;
  rows.reserve(kept.size() * head_dim * blocks);
  for (std::int64_t block = 0; block < blocks; ++block)
    for (const auto head : kept)
      for (std::int64_t i = 0; i < head_dim; ++i) rows.push_back((block * current_heads + head) * head_dim + i);
  return at::tensor(rows, at::kLong);
}

}  // namespace dsee
