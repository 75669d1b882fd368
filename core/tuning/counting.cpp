// Parameter and FLOP counting; see counting.h.
#include "core/tuning/counting.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/model/bert.h"
#include "core/model/gpt2.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"

namespace dsee {

std::unique_ptr<PretrainedModel> model_on_meta(const ModelConfig& config, bool sequence_classification) {
  if (config.family == ModelFamily::gpt2) return std::make_unique<Gpt2Model>(config, at::kFloat, at::kMeta);
  return std::make_unique<EncoderModel>(config, sequence_classification, at::kFloat, at::kMeta);
}

namespace {

bool on_meta(const at::Tensor& t) { return t.device().is_meta(); }

}  // namespace

std::int64_t trainable_parameter_count(PretrainedModel& model, const TuningOptions& options, std::int64_t c) {
  std::int64_t count = 0;
  if (tuning_method_has_update(options.method)) {
    const auto targets =
        options.target_modules.empty() ? default_target_modules(model.config().family) : options.target_modules;
    for (const auto& m : adapted_matrices(model, targets)) {
      count += options.rank * (m.rows + m.cols());
      if (options.method == TuningMethod::dsee) count += std::min(c, m.rows * m.cols());
    }
  }
  if (options.method == TuningMethod::adapter)
    for (const auto& module : adapter_modules(model))
      count += adapter_parameter_count(model.linear(module).out_features(), options.adapter_size);
  if (options.method == TuningMethod::prefix) count += prefix_parameter_count(model.config(), options);
  for (const auto& slot : model.tensor_slots())
    if (slot.tensor->defined() && tuning_trains_tensor(model, options, slot.name)) count += slot.tensor->numel();
  return count;
}

std::int64_t trainable_parameter_count(ModelTuning& tuning) {
  std::int64_t count = 0;
  for (const auto& named : tuning.trainable_parameters()) count += named.tensor.numel();
  return count;
}

// Note [What the FLOP count covers]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// docs/method.md ('Counting parameters and FLOPs') fixes "2 × MACs of every
// linear at its real shape, plus attention 2·2·L²·d_head per head per layer;
// embeddings excluded". Choices left open:
// - tokens per projection: every projection inside the layers runs on all L
//   tokens. BERT's pooler and classifier, and RoBERTa's classifier.dense and
//   out_proj, run on the one [CLS] / <s> vector, so 1 token. GPT-2's LM head
//   (tied to wte, so no separate parameters) produces logits for all L
//   positions: 2·L·hidden·vocab, listed as "lm_head". A decoder that only
//   needs the last position would spend 1/L of that.
// - attention counts the full L×L score matrix also for GPT-2's causal mask
//   (the method's formula; a kernel that skips the masked half does half).
// - biases, layer norms, softmax, GELU and the embedding lookups are left
//   out: they are O(L·hidden) against O(L·hidden²).
// - the non-zero count replaces out·in by the deployed weight's non-zeros
//   (unstructured masks; zeros baked in by `dsee prune` count the same);
//   attention and the LM head are counted dense in both.
ModelCount model_count(PretrainedModel& model, std::int64_t seq_len) {
  const auto& config = model.config();
  ModelCount count;
  count.seq_len = seq_len;

  std::vector<const at::Tensor*> projection_weights;
  for (auto& [module, linear] : model.linears()) {
    const bool once_per_sequence =
        module == "pooler.dense" || module == "classifier" || module.rfind("classifier.", 0) == 0;
    LinearCount row{module, linear->out_features(), linear->in_features(), once_per_sequence ? 1 : seq_len, 0};
    row.nonzero =
        on_meta(linear->weight) ? row.out * row.in : effective_weight(*linear).count_nonzero().item<std::int64_t>();
    count.linears.push_back(row);
    projection_weights.push_back(&linear->weight);
    count.parameters += linear->weight.numel();
    count.nonzero_parameters += row.nonzero;
    // An adapter after the projection (tuning.h (2)): its down [m, d] and
    // up [d, m] run on every token, their tensors are part of the model.
    const auto adapter = adapter_weights(*linear);
    for (std::size_t i = 0; i < adapter.size(); ++i) {
      const auto& weight = adapter[i];
      LinearCount extra{module + (i == 0 ? ".adapter.down" : ".adapter.up"), weight.size(0), weight.size(1), seq_len,
                        0};
      extra.nonzero = on_meta(weight) ? extra.out * extra.in : weight.count_nonzero().item<std::int64_t>();
      count.linears.push_back(extra);
      count.parameters += weight.numel() + extra.out;  // and its bias
      count.nonzero_parameters += extra.nonzero + extra.out;
    }
  }
  for (const auto& slot : model.tensor_slots()) {
    if (!slot.tensor->defined()) continue;
    if (std::find(projection_weights.begin(), projection_weights.end(), slot.tensor) != projection_weights.end())
      continue;
    count.parameters += slot.tensor->numel();
    count.nonzero_parameters +=
        on_meta(*slot.tensor) ? slot.tensor->numel() : slot.tensor->count_nonzero().item<std::int64_t>();
  }
  // Prefixes (tuning.h (3)) deploy as P [L, 2·layers·hidden]: parameters,
  // and L more keys for every query.
  const std::int64_t prefix_length = model.attention_prefix ? model.attention_prefix->length() : 0;
  count.parameters += prefix_length * 2 * config.num_layers * config.hidden_size;
  count.nonzero_parameters += prefix_length * 2 * config.num_layers * config.hidden_size;
  if (config.family == ModelFamily::gpt2)
    count.linears.push_back(
        {"lm_head", config.vocab_size, config.hidden_size, seq_len, config.vocab_size * config.hidden_size});

  for (std::int64_t layer = 0; layer < config.num_layers; ++layer) {
    const auto heads = std::int64_t(config.kept_heads(layer).size());
    count.heads_per_layer.push_back(heads);
    count.attention_flops += heads * 2 * 2 * seq_len * (seq_len + prefix_length) * config.head_dim();
  }
  count.flops_dense = count.flops_nonzero = count.attention_flops;
  for (const auto& row : count.linears) {
    count.flops_dense += 2 * row.out * row.in * row.tokens;
    count.flops_nonzero += 2 * row.nonzero * row.tokens;
  }
  return count;
}

}  // namespace dsee
