// Losses (see losses.h). Thin wrappers over ATen's cross_entropy / mse_loss
// so the values and gradients are the reference's own; what lives here is
// the shape checking and the label shift of causal LM training.
#include "core/train/losses.h"

#include <ATen/ATen.h>

#include "base/error.h"
#include "base/shape_text.h"

namespace dsee {

at::Tensor sequence_classification_loss(const at::Tensor& logits, const at::Tensor& labels) {
  DSEE_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.size(0) == logits.size(0),
             "classification loss: logits must be [batch, num_labels] and labels [batch], got {} and {}",
             shape_text(logits.sizes()), shape_text(labels.sizes()));
  const at::Tensor scores = logits.to(at::kFloat);
  if (logits.size(1) == 1) {
    DSEE_CHECK(at::isFloatingType(labels.scalar_type()),
               "regression loss (num_labels = 1): labels must be floating point, got {}",
               c10::toString(labels.scalar_type()));
    return at::mse_loss(scores.select(1, 0), labels.to(at::kFloat));
  }
  DSEE_CHECK(labels.scalar_type() == at::kLong, "classification loss: labels must be int64 classes, got {}",
             c10::toString(labels.scalar_type()));
  return at::cross_entropy_loss(scores, labels);
}

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double label_smoothing,
                          LossReduction reduction) {
  DSEE_CHECK(
      logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
      "causal LM loss: logits must be [batch, seq, vocab] and labels [batch, seq], got {} and {}",
      shape_text(logits.sizes()), shape_text(labels.sizes()));
  DSEE_CHECK(labels.scalar_type() == at::kLong, "causal LM loss: labels must be int64, got {}",
             c10::toString(labels.scalar_type()));
  DSEE_CHECK(label_smoothing >= 0 && label_smoothing <= 1, "label smoothing must lie in [0, 1], got {}",
             label_smoothing);
  const std::int64_t seq = logits.size(1), vocab = logits.size(2);
  // Position i predicts token i + 1; the last position predicts nothing.
  const at::Tensor shifted_logits = logits.narrow(1, 0, seq - 1).to(at::kFloat).reshape({-1, vocab});
  const at::Tensor shifted_labels = labels.narrow(1, 1, seq - 1).reshape({-1});
  const int64_t mode = reduction == LossReduction::mean ? at::Reduction::Mean : at::Reduction::Sum;
  return at::cross_entropy_loss(shifted_logits, shifted_labels, {}, mode, kIgnoreLabel, label_smoothing);
}

std::int64_t causal_lm_target_count(const at::Tensor& labels) {
  DSEE_CHECK(labels.dim() == 2, "causal LM labels must be [batch, seq], got {}", shape_text(labels.sizes()));
  return labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreLabel).sum().item<std::int64_t>();
}

}  // namespace dsee
