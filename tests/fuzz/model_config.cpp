// Fuzz target: config.json of a Hugging Face model folder
// (core/model/model_config.h), read as model_config_load reads it. An
// accepted configuration must describe a model dsee can build (positive
// sizes, heads that divide the hidden size, kept heads inside the layer's
// heads, a padding id inside the vocabulary) and must save and re-read to
// the same configuration.
#include "core/model/model_config.h"

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(model_config) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(dsee_fuzz::as_text(data, size));
  } catch (const nlohmann::json::exception&) {
    return 0;  // model_config_load: "not valid JSON"
  }
  try {
    const dsee::ModelConfig config = dsee::model_config_parse(json, "config.json");
    dsee_fuzz::require(config.vocab_size > 0 && config.hidden_size > 0 && config.num_layers > 0 &&
                       config.num_heads > 0);
    dsee_fuzz::require(config.hidden_size % config.num_heads == 0 && config.intermediate_size > 0 &&
                       config.max_positions > 0);
    dsee_fuzz::require(config.num_labels >= 1 &&
                       static_cast<std::int64_t>(config.id2label.size()) == config.num_labels);
    dsee_fuzz::require(config.family == dsee::ModelFamily::gpt2 || config.type_vocab_size >= 1);
    dsee_fuzz::require(!config.pad_token_id || (*config.pad_token_id >= 0 && *config.pad_token_id < config.vocab_size));
    dsee_fuzz::require(config.position_offset >= 0 && config.max_positions > config.position_offset);
    for (std::int64_t layer = 0; layer < config.num_layers; ++layer)
      for (const std::int64_t head : config.kept_heads(layer)) dsee_fuzz::require(head >= 0 && head < config.num_heads);
    const dsee::ModelConfig again =
        dsee::model_config_parse(dsee::model_config_to_json(config, "float32"), "config.json (saved)");
    dsee_fuzz::require(again.family == config.family && again.vocab_size == config.vocab_size &&
                       again.hidden_size == config.hidden_size && again.num_layers == config.num_layers &&
                       again.num_heads == config.num_heads && again.num_labels == config.num_labels &&
                       again.id2label == config.id2label && again.pruned_heads == config.pruned_heads);
  } catch (const dsee::Error&) {
  }
  return 0;
}
