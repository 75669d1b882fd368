// EarlyBERT's structured pruning (Chen et al., "EarlyBERT: Efficient BERT
// Training via Early-bird Lottery Tickets", ACL 2021; docs/tuning.md,
// 'EarlyBERT'): learnable slimming coefficients on the attention heads and
// the feed-forward neurons, trained with an ℓ1 penalty, then the lowest of
// every layer removed.
//
// Where the coefficients sit (the model is unchanged otherwise):
//   head h of layer ℓ     c_ℓh multiplies the head's context output, the
//                         columns [h·d_head, (h+1)·d_head) of the attention
//                         output projection's input (BERT/RoBERTa
//                         attention.output.dense, GPT-2 attn.c_proj);
//   neuron j of layer ℓ   c_ℓj multiplies the activation act(x·W1ᵀ + b1)_j,
//                         column j of output.dense's input (GPT-2 mlp.c_proj).
// Scaling an input column of a projection is scaling that column of its
// weight, so EarlyBertScaling puts them on the linear seam as the
// projection's mask (Linear::mask, W ⊙ M with M = 1 ⊗ c): the forward and
// every gradient are those of the scaled activations.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "base/named_tensor.h"
#include "core/sparsity/prune_plan.h"

namespace dsee {

class PretrainedModel;

struct EarlyBertCoefficients {
  // Per layer, fp32 on the model's device, requires grad; empty when not searched.
  std::vector<at::Tensor> heads;    // [heads the layer has now], in kept_heads order
  std::vector<at::Tensor> neurons;  // [feed-forward width now], in kept_neurons order
  // "earlybert.heads.<layer>", then "earlybert.neurons.<layer>" (the tensors themselves).
  NamedTensors named() const;
  // Σ |c| over every coefficient: the ℓ1 penalty before λ (0-dim, differentiable).
  at::Tensor l1_norm() const;
};

// Every coefficient at 1; heads and/or neurons as asked.
EarlyBertCoefficients earlybert_coefficients(PretrainedModel& model, bool heads, bool neurons);

// While alive, the coefficients scale the model (the masks above, in the
// weight's dtype); the destructor removes the masks. dsee::Error when one
// of those projections already has a mask (an unstructured plan).
class EarlyBertScaling {
 public:
  EarlyBertScaling(PretrainedModel& model, const EarlyBertCoefficients& coefficients);
  // Sets the masks from the coefficients' current values: before every
  // forward, since each backward frees the graph from c to the masks.
  void apply();
  ~EarlyBertScaling();
  EarlyBertScaling(const EarlyBertScaling&) = delete;
  EarlyBertScaling& operator=(const EarlyBertScaling&) = delete;

 private:
  PretrainedModel& model_;
  EarlyBertCoefficients coefficients_;
  std::vector<std::string> modules_;  // in the order of coefficients_.named()
};

// In every layer, the `heads_per_layer` heads and the `neurons_per_layer`
// neurons with the smallest |c| (ties: the lower original id goes first),
// as original ids. dsee::Error when a layer would lose every head or neuron,
// or a count is asked of a kind that has no coefficients.
PrunePlan earlybert_plan(PretrainedModel& model, const EarlyBertCoefficients& coefficients,
                         std::int64_t heads_per_layer, std::int64_t neurons_per_layer);

}  // namespace dsee
