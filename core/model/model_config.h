// Model configuration: a Hugging Face config.json read into one typed struct
// for the three families dsee runs (BERT, RoBERTa, GPT-2).
//
// Every field the forward pass depends on is here, under the HF meaning.
// Fields HF always writes (sizes, layer and head counts, activation,
// layer-norm epsilon, maximum positions, vocabulary) are required: a missing
// one is a dsee::Error naming the field and the file. Fields HF itself
// defaults when absent (pad_token_id, pruned_heads, num_labels, problem_type,
// GPT-2's n_inner and scale_attn_weights, ...) take HF's default, so the
// configs of the hub models (bert-base-uncased, roberta-large, gpt2) load as
// they are. Unsupported architectures or options (relative position
// embeddings, cross-attention, an unknown activation) are errors too.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dsee {

enum class ModelFamily { bert, roberta, gpt2 };

// "bert", "roberta", "gpt2": config.json's model_type.
const char* model_family_name(ModelFamily family);

// The feed-forward activation. gelu is the exact (erf) GELU of BERT and
// RoBERTa; gelu_new is GPT-2's tanh approximation (gelu_pytorch_tanh and
// gelu_fast name the same function in HF).
enum class Activation { gelu, gelu_new, relu };

struct ModelConfig {
  ModelFamily family = ModelFamily::bert;
  std::vector<std::string> architectures;  // e.g. "BertForSequenceClassification"
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;        // GPT-2: n_embd
  std::int64_t num_layers = 0;         // num_hidden_layers / n_layer
  std::int64_t num_heads = 0;          // before pruning; num_attention_heads / n_head
  std::int64_t intermediate_size = 0;  // GPT-2: n_inner, default 4 * n_embd
  std::int64_t max_positions = 0;      // max_position_embeddings / n_positions
  std::int64_t type_vocab_size = 0;    // BERT/RoBERTa; 0 for GPT-2
  Activation activation = Activation::gelu;
  double layer_norm_eps = 1e-12;  // layer_norm_eps / layer_norm_epsilon
  std::optional<std::int64_t> pad_token_id;
  // RoBERTa: position ids start at padding_idx + 1 (= pad_token_id + 1), so
  // a sequence may hold max_positions - position_offset tokens. 0 otherwise.
  std::int64_t position_offset = 0;
  double initializer_range = 0.02;  // std of a newly initialised task head
  // GPT-2 attention scaling: 1/sqrt(head_dim) when scale_attn_weights, and an
  // extra 1/(layer + 1) when scale_attn_by_inverse_layer_idx.
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  std::int64_t num_labels = 2;        // from num_labels, else id2label's size, else 2
  std::vector<std::string> id2label;  // num_labels entries ("LABEL_i" when absent)
  std::string problem_type;           // "", "regression", "single_label_classification", ...
  // Heads removed per layer, original head ids (HF `pruned_heads`).
  std::map<std::int64_t, std::vector<std::int64_t>> pruned_heads;
  // The file as read: saving writes it back with the fields dsee changed.
  nlohmann::json json;

  std::int64_t head_dim() const { return hidden_size / num_heads; }
  // Original ids of the heads layer `layer` keeps, ascending.
  std::vector<std::int64_t> kept_heads(std::int64_t layer) const;
  // True when the architectures name a sequence-classification model.
  bool has_sequence_classification_head() const;
};

// Parses config.json text; `source` names the file in errors.
ModelConfig model_config_parse(const nlohmann::json& json, const std::string& source);

// Reads DIR/config.json (or `path` itself when it names a .json file).
ModelConfig model_config_load(const std::filesystem::path& path);

// The JSON to save: the original with the fields dsee may change
// (num_labels/id2label/label2id, problem_type, pruned_heads, intermediate_size /
// GPT-2 n_inner, dtype) updated.
nlohmann::json model_config_to_json(const ModelConfig& config, const std::string& dtype_name);

}  // namespace dsee
