// Training losses, as the Hugging Face heads compute them: cross-entropy for
// sequence classification, MSE for regression (num_labels == 1, STS-B), and
// the causal LM loss of GPT2LMHeadModel (predict token i+1 from position i;
// labels -100 are ignored, which is how context and padding tokens stay out
// of the loss) with optional label smoothing:
//   loss = (1 − ε)·NLL + ε·mean over the vocabulary of −log p,
// averaged over the counted tokens (torch's cross_entropy(label_smoothing=ε)).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dsee {

inline constexpr std::int64_t kIgnoreLabel = -100;

// logits [batch, num_labels] (float), labels [batch]: int64 classes when
// num_labels > 1, float targets when num_labels == 1 (MSE of logits[:, 0]).
// Returns the mean loss (0-dim fp32). dsee::Error on shape or dtype mismatch.
at::Tensor sequence_classification_loss(const at::Tensor& logits, const at::Tensor& labels);

enum class LossReduction { mean, sum };

// logits [batch, seq, vocab], labels int64 [batch, seq] aligned with the
// input (not shifted; kIgnoreLabel where no loss). mean: over the counted
// targets (NaN when none, as torch); sum: their sum, for gradient
// accumulation that divides by the tokens of all micro-batches.
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double label_smoothing = 0.0,
                          LossReduction reduction = LossReduction::mean);

// The number of targets causal_lm_loss counts: labels[:, 1:] != kIgnoreLabel.
std::int64_t causal_lm_target_count(const at::Tensor& labels);

}  // namespace dsee
