// Linear: see Note [The linear seam] in linear.h.
#include "core/model/linear.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace dsee {

at::Tensor Linear::masked_weight() const { return mask.defined() ? weight * mask : weight; }

at::Tensor Linear::forward_frozen(const at::Tensor& x) const {
  const auto dtype = weight.scalar_type();
  return at::linear(x.scalar_type() == dtype ? x : x.to(dtype), masked_weight(), bias);
}

at::Tensor Linear::forward(const at::Tensor& x) const { return tuning ? tuning->forward(*this, x) : forward_frozen(x); }

void Linear::keep_rows(const at::Tensor& rows) {
  DSEE_ASSERT(rows.dim() == 1 && rows.scalar_type() == at::kLong, "keep_rows takes int64 indices");
  const auto index = rows.to(weight.device());
  weight = weight.index_select(0, index);
  if (bias.defined()) bias = bias.index_select(0, index);
  if (mask.defined()) mask = mask.index_select(0, index);
  if (tuning) tuning->keep_rows(rows);
}

void Linear::keep_columns(const at::Tensor& columns) {
  DSEE_ASSERT(columns.dim() == 1 && columns.scalar_type() == at::kLong, "keep_columns takes int64 indices");
  const auto index = columns.to(weight.device());
  weight = weight.index_select(1, index);
  if (mask.defined()) mask = mask.index_select(1, index);
  if (tuning) tuning->keep_columns(columns);
}

}  // namespace dsee
