// Small random models for unit tests: config.json contents for BERT,
// RoBERTa and GPT-2, a seeded fill of every tensor, and random Ω and updates
// for a tuning on them. Parity with transformers is in tests/parity; these
// only need valid shapes and values.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <memory>

#include "core/model/bert.h"
#include "core/model/gpt2.h"
#include "core/model/model_config.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"
#include "core/tuning/tuning.h"

namespace dsee {

// hidden 24, 2 layers, 4 heads of 6, classification head.
inline nlohmann::json bert_json() {
  return {{"model_type", "bert"},
          {"vocab_size", 50},
          {"hidden_size", 24},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"intermediate_size", 30},
          {"max_position_embeddings", 16},
          {"type_vocab_size", 2},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"architectures", {"BertForSequenceClassification"}}};
}

// bert-base-uncased's config.json with a 2-label classification head (for
// counts on the meta device).
inline nlohmann::json bert_base_json() {
  return {{"model_type", "bert"},
          {"vocab_size", 30522},
          {"hidden_size", 768},
          {"num_hidden_layers", 12},
          {"num_attention_heads", 12},
          {"intermediate_size", 3072},
          {"max_position_embeddings", 512},
          {"type_vocab_size", 2},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"num_labels", 2},
          {"architectures", {"BertForSequenceClassification"}}};
}

// gpt2-medium's config.json (for counts on the meta device).
inline nlohmann::json gpt2_medium_json() {
  return {{"model_type", "gpt2"},
          {"vocab_size", 50257},
          {"n_embd", 1024},
          {"n_layer", 24},
          {"n_head", 16},
          {"n_positions", 1024},
          {"activation_function", "gelu_new"},
          {"layer_norm_epsilon", 1e-5}};
}

inline nlohmann::json roberta_json() {
  auto json = bert_json();
  json["model_type"] = "roberta";
  json["pad_token_id"] = 1;
  json["max_position_embeddings"] = 20;
  json["architectures"] = {"RobertaForSequenceClassification"};
  return json;
}

// n_embd 24, 3 layers, 4 heads of 6.
inline nlohmann::json gpt2_json() {
  return {{"model_type", "gpt2"},
          {"vocab_size", 40},
          {"n_embd", 24},
          {"n_layer", 3},
          {"n_head", 4},
          {"n_positions", 20},
          {"activation_function", "gelu_new"},
          {"layer_norm_epsilon", 1e-5}};
}

// Fills every tensor: layer norms near 1, everything else small noise.
inline void randomise(PretrainedModel& model, std::uint64_t seed) {
  at::manual_seed(seed);
  for (const auto& slot : model.tensor_slots()) {
    const bool norm_weight = slot.name.find("LayerNorm.weight") != std::string::npos ||
                             (slot.name.find("ln_") != std::string::npos && slot.name.ends_with(".weight"));
    slot.tensor->copy_(at::randn(slot.tensor->sizes()) * 0.2 + (norm_weight ? 1.0 : 0.0));
  }
}

// A randomised model of the family `json` describes (with a classification
// head for BERT/RoBERTa).
inline std::unique_ptr<PretrainedModel> tiny_model(const nlohmann::json& json, std::uint64_t seed) {
  auto config = model_config_parse(json, "tiny/config.json");
  std::unique_ptr<PretrainedModel> model;
  if (config.family == ModelFamily::gpt2)
    model = std::make_unique<Gpt2Model>(config, at::kFloat, at::kCPU);
  else
    model = std::make_unique<EncoderModel>(config, true, at::kFloat, at::kCPU);
  randomise(*model, seed);
  return model;
}

// c random distinct flat indices per adapted matrix (`patterns`; empty: the
// family's default targets), ascending, from a generator of its own seeded
// with `seed`.
inline std::vector<OmegaEntry> random_omega(PretrainedModel& model, std::int64_t c, std::uint64_t seed,
                                            const std::vector<std::string>& patterns = {}) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<OmegaEntry> out;
  for (const auto& m :
       adapted_matrices(model, patterns.empty() ? default_target_modules(model.config().family) : patterns)) {
    const auto indices = at::randperm(m.rows * m.cols(), generator, at::TensorOptions().dtype(at::kLong));
    out.push_back({m.name, m.rows, m.cols(), std::get<0>(indices.slice(0, 0, c).sort())});
  }
  return out;
}

// Non-zero A, B and S values (from the global generator seeded with `seed`),
// so every term of the update contributes.
inline void randomise_updates(ModelTuning& tuning, std::uint64_t seed) {
  at::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (auto* u : tuning.updates()) {
    u->lora_A.copy_(at::randn_like(u->lora_A) * 0.3);
    u->lora_B.copy_(at::randn_like(u->lora_B) * 0.3);
    u->sparse_values.copy_(at::randn_like(u->sparse_values));
  }
}

}  // namespace dsee
