// Counting (docs/method.md, 'Counting parameters and FLOPs'): trainable
// parameters of a tuning configuration, parameters (and non-zeros) of the
// deployed model, inference FLOPs.
//
// Shapes are the model's current ones, so a head-pruned model counts its
// shrunk projections. A model built on the meta device (no storage) counts
// trainable parameters, parameters and dense FLOPs without allocating
// (model_on_meta); non-zeros need values and equal the dense numbers there.
//
// FLOPs per sequence of L tokens (Note [What the FLOP count covers] in
// counting.cpp): 2 × MACs of every projection at its real shape — encoder
// projections on L tokens; BERT's pooler and the classification heads on 1
// token (the [CLS] / <s> vector); GPT-2's tied LM head on L tokens — plus
// attention scores and context 2·2·L²·d_head per kept head per layer.
// Embeddings, biases, layer norms, softmax and activations are excluded.
// The non-zero FLOPs count 2 × nnz(deployed weight) × tokens per projection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model/model_config.h"
#include "core/tuning/tuning.h"

namespace dsee {

class PretrainedModel;

// The model of `config` (BERT/RoBERTa with a classification head when
// `sequence_classification`) on the meta device: every shape, no storage.
std::unique_ptr<PretrainedModel> model_on_meta(const ModelConfig& config, bool sequence_classification);

// Trainable parameters `options` would give on `model` (docs/method.md, 'The
// update ΔW'): dsee r·(m + n) + c per adapted matrix (c capped at m·n), lora
// r·(m + n), both plus the task head (BERT classifier; RoBERTa
// classifier.dense + out_proj; GPT-2: none, its LM head is tied to the
// embeddings) when options.train_head; adapter 2·d·m + m + d per adapter
// (adapter_modules, d the projection's output width, m = adapter_size);
// prefix tuning.h's prefix_parameter_count plus the task head;
// full, bitfit, top_k, and adapter besides its adapters: the model tensors
// tuning_trains_tensor selects. Equals the numel over tuning_attach's
// trainable_parameters().
std::int64_t trainable_parameter_count(PretrainedModel& model, const TuningOptions& options, std::int64_t c);
// Σ numel of an attached tuning's trainable_parameters().
std::int64_t trainable_parameter_count(ModelTuning& tuning);

// One projection's share of the FLOPs.
struct LinearCount {
  std::string module;  // HF module name; "lm_head" for GPT-2's tied head
  std::int64_t out = 0, in = 0;
  std::int64_t tokens = 0;   // per sequence: L or 1
  std::int64_t nonzero = 0;  // non-zeros of the deployed weight (out·in on meta)
};

struct ModelCount {
  std::int64_t seq_len = 0;
  std::int64_t parameters = 0;          // Σ numel over every tensor (the tied LM head once)
  std::int64_t nonzero_parameters = 0;  // Σ non-zeros of the deployed tensors (merged, masked)
  std::int64_t attention_flops = 0;     // 2·2·L·(L + prefix)·d_head per kept head per layer
  std::int64_t flops_dense = 0;         // attention + 2·out·in·tokens per projection
  std::int64_t flops_nonzero = 0;       // attention + 2·nnz·tokens per projection
  std::vector<std::int64_t> heads_per_layer;
  std::vector<LinearCount> linears;
};

// Counts `model` as deployed: a projection's weight is effective_weight()
// (an attached tuning merged in, the mask applied); an attached adapter adds
// its down and up projections ("<module>.adapter.down" / ".up", L tokens;
// their biases count as parameters, and as non-zeros, since an adapter is
// deployed as it is). An attached prefix (model.attention_prefix, length P)
// adds its P·2·layers·hidden deployed values to the parameters and its keys
// to attention: 2·2·L·(L + P)·d_head per head per layer.
ModelCount model_count(PretrainedModel& model, std::int64_t seq_len);

}  // namespace dsee
