// Linear: see Note [The linear seam] in linear.h.
#include "core/model/linear.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace dsee {

namespace {

// The entries `index` of `tensor` along `dim` as a new leaf, trainable when
// `tensor` was: full fine-tuning goes on training a pruned weight, which must
// not keep a history back to the tensor it was cut from.
// On the meta device (shapes only, counting.h's model_on_meta) just the shape.
at::Tensor select_leaf(const at::Tensor& tensor, std::int64_t dim, const at::Tensor& index) {
  at::NoGradGuard no_grad;
  if (tensor.is_meta()) {
    auto sizes = tensor.sizes().vec();
    sizes[std::size_t(dim)] = index.size(0);
    return at::empty(sizes, tensor.options()).requires_grad_(tensor.requires_grad());
  }
  return tensor.index_select(dim, index).requires_grad_(tensor.requires_grad());
}

}  // namespace

at::Tensor Linear::masked_weight() const { return mask.defined() ? weight * mask : weight; }

at::Tensor Linear::forward_frozen(const at::Tensor& x) const {
  const auto dtype = weight.scalar_type();
  return at::linear(x.scalar_type() == dtype ? x : x.to(dtype), masked_weight(), bias);
}

at::Tensor Linear::forward(const at::Tensor& x) const { return tuning ? tuning->forward(*this, x) : forward_frozen(x); }

void Linear::keep_rows(const at::Tensor& rows) {
  DSEE_ASSERT(rows.dim() == 1 && rows.scalar_type() == at::kLong, "keep_rows takes int64 indices");
  const auto index = rows.to(weight.device());
  weight = select_leaf(weight, 0, index);
  if (bias.defined()) bias = select_leaf(bias, 0, index);
  if (mask.defined()) mask = select_leaf(mask, 0, index);
  if (tuning) tuning->keep_rows(rows);
}

void Linear::keep_columns(const at::Tensor& columns) {
  DSEE_ASSERT(columns.dim() == 1 && columns.scalar_type() == at::kLong, "keep_columns takes int64 indices");
  const auto index = columns.to(weight.device());
  weight = select_leaf(weight, 1, index);
  if (mask.defined()) mask = select_leaf(mask, 1, index);
  if (tuning) tuning->keep_columns(columns);
}

}  // namespace dsee
