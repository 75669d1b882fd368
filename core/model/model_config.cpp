// config.json → ModelConfig. Required fields are read with `required()`, which
// names the field and the file when absent or of the wrong type; optional ones
// fall back to the default transformers uses for that family.
#include "core/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <set>

#include "base/enum_names.h"
#include "base/error.h"
#include "base/files.h"

namespace dsee {
namespace {

using nlohmann::json;

struct Reader {
  const json& object;
  const std::string& source;

  bool has(const char* key) const { return object.contains(key) && !object[key].is_null(); }

  template <typename T>
  T required(const char* key) const {
    DSEE_CHECK(
        has(key), "{}: missing field \"{}\" (every {} config.json has it; is this a Hugging Face model?)", source, key,
        object.contains("model_type") && object["model_type"].is_string() ? object["model_type"].get<std::string>()
                                                                          : std::string("model"));
    return convert<T>(key);
  }

  template <typename T>
  T optional(const char* key, T fallback) const {
    return has(key) ? convert<T>(key) : fallback;
  }

  // Integers must be JSON integers (or floats with an integral value) within
  // int64: nlohmann's get<std::int64_t> would cut 2.5 to 2 and leave 1e300
  // undefined. Other types convert as nlohmann converts them.
  template <typename T>
  T convert(const char* key) const {
    const json& value = object[key];
    try {
      if constexpr (std::is_same_v<T, std::int64_t>) {
        if (value.is_number_integer() && !(value.is_number_unsigned() && value.get<std::uint64_t>() > INT64_MAX))
          return value.get<std::int64_t>();
        if (value.is_number_float()) {
          const double number = value.get<double>();
          if (number == std::floor(number) && number >= -9.2e18 && number <= 9.2e18)
            return static_cast<std::int64_t>(number);
        }
      } else {
        return value.get<T>();
      }
    } catch (const json::exception&) {
    }
    throw Error(fmt::format("{}: field \"{}\" has the wrong type ({})", source, key, value.dump()));
  }
};

Activation activation_parse(const std::string& name, const char* field, const std::string& source) {
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::gelu_new;
  if (name == "relu") return Activation::relu;
  throw Error(fmt::format("{}: field \"{}\" is \"{}\"; dsee supports gelu, gelu_new, gelu_pytorch_tanh and relu",
                          source, field, name));
}

// A JSON object key that should be a non-negative number ("3"); -1 if not.
std::int64_t key_number(const std::string& key) {
  if (key.empty() || key.find_first_not_of("0123456789") != std::string::npos || key.size() > 18) return -1;
  return std::stoll(key);
}

// More labels than any classification head dsee trains; the bound keeps a
// damaged num_labels from filling memory with "LABEL_i" names.
constexpr std::int64_t kMaxLabels = std::int64_t{1} << 20;

void read_labels(const Reader& r, ModelConfig& config) {
  std::map<std::int64_t, std::string> labels;
  if (r.has("id2label")) {
    DSEE_CHECK(r.object["id2label"].is_object(), "{}: field \"id2label\" must be an object", r.source);
    for (const auto& [key, value] : r.object["id2label"].items()) {
      const std::int64_t id = key_number(key);
      DSEE_CHECK(id >= 0 && value.is_string(), "{}: field \"id2label\" has a bad entry \"{}\": {}", r.source, key,
                 value.dump());
      labels[id] = value.get<std::string>();
    }
  }
  config.num_labels = r.optional<std::int64_t>("num_labels", labels.empty() ? 2 : std::int64_t(labels.size()));
  DSEE_CHECK(config.num_labels >= 1 && config.num_labels <= kMaxLabels,
             "{}: field \"num_labels\" is {}; it must be between 1 and {}", r.source, config.num_labels, kMaxLabels);
  for (std::int64_t i = 0; i < config.num_labels; ++i)
    config.id2label.push_back(labels.count(i) ? labels[i] : fmt::format("LABEL_{}", i));
  config.problem_type = r.optional<std::string>("problem_type", "");
}

void read_pruned_heads(const Reader& r, ModelConfig& config) {
  if (!r.has("pruned_heads")) return;
  DSEE_CHECK(r.object["pruned_heads"].is_object(), "{}: field \"pruned_heads\" must be an object", r.source);
  for (const auto& [key, value] : r.object["pruned_heads"].items()) {
    const std::int64_t layer = key_number(key);
    DSEE_CHECK(layer >= 0 && layer < config.num_layers && value.is_array(),
               "{}: field \"pruned_heads\" names layer \"{}\"; layers are 0..{}", r.source, key, config.num_layers - 1);
    std::set<std::int64_t> heads;
    for (const auto& head : value) {
      DSEE_CHECK(
          head.is_number_integer() && head.get<std::int64_t>() >= 0 && head.get<std::int64_t>() < config.num_heads,
          "{}: field \"pruned_heads\" layer {} names head {}; heads are 0..{}", r.source, layer, head.dump(),
          config.num_heads - 1);
      heads.insert(head.get<std::int64_t>());
    }
    DSEE_CHECK(std::int64_t(heads.size()) < config.num_heads,
               "{}: field \"pruned_heads\" removes every head of layer {}", r.source, layer);
    if (!heads.empty()) config.pruned_heads[layer] = {heads.begin(), heads.end()};
  }
}

}  // namespace

const char* model_family_name(ModelFamily family) {
  static constexpr EnumName<ModelFamily> kFamilies[] = {
      {ModelFamily::bert, "bert"}, {ModelFamily::roberta, "roberta"}, {ModelFamily::gpt2, "gpt2"}};
  return enum_name(kFamilies, family);
}

std::vector<std::int64_t> ModelConfig::kept_heads(std::int64_t layer) const {
  std::vector<std::int64_t> kept;
  const auto pruned = pruned_heads.find(layer);
  for (std::int64_t h = 0; h < num_heads; ++h)
    if (pruned == pruned_heads.end() || !std::binary_search(pruned->second.begin(), pruned->second.end(), h))
      kept.push_back(h);
  return kept;
}

bool ModelConfig::has_sequence_classification_head() const {
  return std::any_of(architectures.begin(), architectures.end(),
                     [](const std::string& a) { return a.find("ForSequenceClassification") != std::string::npos; });
}

ModelConfig model_config_parse(const nlohmann::json& object, const std::string& source) {
  DSEE_CHECK(object.is_object(), "{}: a config.json must hold a JSON object", source);
  const Reader r{object, source};
  ModelConfig config;
  config.json = object;
  const auto model_type = r.required<std::string>("model_type");
  config.architectures = r.optional<std::vector<std::string>>("architectures", {});

  if (model_type == "bert" || model_type == "roberta") {
    config.family = model_type == "bert" ? ModelFamily::bert : ModelFamily::roberta;
    config.vocab_size = r.required<std::int64_t>("vocab_size");
    config.hidden_size = r.required<std::int64_t>("hidden_size");
    config.num_layers = r.required<std::int64_t>("num_hidden_layers");
    config.num_heads = r.required<std::int64_t>("num_attention_heads");
    config.intermediate_size = r.required<std::int64_t>("intermediate_size");
    config.max_positions = r.required<std::int64_t>("max_position_embeddings");
    config.type_vocab_size = r.required<std::int64_t>("type_vocab_size");
    DSEE_CHECK(config.type_vocab_size >= 1, "{}: field \"type_vocab_size\" must be at least 1, got {}", source,
               config.type_vocab_size);
    config.activation = activation_parse(r.required<std::string>("hidden_act"), "hidden_act", source);
    config.layer_norm_eps = r.required<double>("layer_norm_eps");
    config.pad_token_id = r.optional<std::int64_t>("pad_token_id", model_type == "bert" ? 0 : 1);
    const auto position_type = r.optional<std::string>("position_embedding_type", "absolute");
    DSEE_CHECK(position_type == "absolute",
               "{}: field \"position_embedding_type\" is \"{}\"; dsee supports \"absolute\" only", source,
               position_type);
    DSEE_CHECK(!r.optional<bool>("is_decoder", false) && !r.optional<bool>("add_cross_attention", false),
               "{}: fields \"is_decoder\"/\"add_cross_attention\": dsee runs BERT/RoBERTa as encoders only", source);
  } else if (model_type == "gpt2") {
    config.family = ModelFamily::gpt2;
    config.vocab_size = r.required<std::int64_t>("vocab_size");
    config.hidden_size = r.required<std::int64_t>("n_embd");
    config.num_layers = r.required<std::int64_t>("n_layer");
    config.num_heads = r.required<std::int64_t>("n_head");
    const bool sized = config.hidden_size > 0 && config.hidden_size < (std::int64_t{1} << 60);  // 4 × fits
    config.intermediate_size = r.optional<std::int64_t>("n_inner", sized ? 4 * config.hidden_size : 0);
    config.max_positions = r.required<std::int64_t>("n_positions");
    config.activation = activation_parse(r.required<std::string>("activation_function"), "activation_function", source);
    config.layer_norm_eps = r.required<double>("layer_norm_epsilon");
    if (r.has("pad_token_id")) config.pad_token_id = r.convert<std::int64_t>("pad_token_id");
    config.scale_attn_weights = r.optional<bool>("scale_attn_weights", true);
    config.scale_attn_by_inverse_layer_idx = r.optional<bool>("scale_attn_by_inverse_layer_idx", false);
    DSEE_CHECK(!r.optional<bool>("add_cross_attention", false),
               "{}: field \"add_cross_attention\": dsee runs GPT-2 without cross-attention", source);
    DSEE_CHECK(r.optional<bool>("tie_word_embeddings", true),
               "{}: field \"tie_word_embeddings\" is false; dsee's GPT-2 LM head is tied to wte", source);
  } else {
    throw Error(
        fmt::format("{}: field \"model_type\" is \"{}\"; dsee supports bert, roberta and gpt2", source, model_type));
  }
  config.initializer_range = r.optional<double>("initializer_range", 0.02);
  DSEE_CHECK(!config.pad_token_id || (*config.pad_token_id >= 0 && *config.pad_token_id < config.vocab_size),
             "{}: field \"pad_token_id\" is {}; it must be a token id of the vocabulary (0..{})", source,
             *config.pad_token_id, config.vocab_size - 1);
  // RoBERTa's position ids start after the padding index.
  if (config.family == ModelFamily::roberta) config.position_offset = *config.pad_token_id + 1;

  DSEE_CHECK(config.hidden_size > 0 && config.num_heads > 0 && config.hidden_size % config.num_heads == 0,
             "{}: hidden size {} is not a positive multiple of the head count {}", source, config.hidden_size,
             config.num_heads);
  DSEE_CHECK(config.num_layers > 0 && config.vocab_size > 0 && config.intermediate_size > 0 &&
                 config.max_positions > config.position_offset,
             "{}: layer count, vocabulary, intermediate size and positions must be positive", source);
  // A bound well above any released model (the largest have ~100 layers), so a
  // damaged count fails here instead of in per-layer loops and allocations.
  constexpr std::int64_t kMaxLayers = 4096;
  DSEE_CHECK(config.num_layers <= kMaxLayers, "{}: the layer count is {}; dsee reads at most {} layers", source,
             config.num_layers, kMaxLayers);
  read_labels(r, config);
  read_pruned_heads(r, config);
  return config;
}

ModelConfig model_config_load(const std::filesystem::path& path) {
  const auto file = path.extension() == ".json" ? path : path / "config.json";
  DSEE_CHECK(std::filesystem::is_regular_file(file),
             "{}: cannot read the model configuration (a Hugging Face model folder holds config.json)", file.string());
  return model_config_parse(file_read_json(file), file.string());
}

nlohmann::json model_config_to_json(const ModelConfig& config, const std::string& dtype_name) {
  nlohmann::json out = config.json;
  out["num_labels"] = config.num_labels;
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (std::size_t i = 0; i < config.id2label.size(); ++i) {
    id2label[std::to_string(i)] = config.id2label[i];
    label2id[config.id2label[i]] = i;
  }
  out["id2label"] = id2label;
  out["label2id"] = label2id;
  if (!config.problem_type.empty()) out["problem_type"] = config.problem_type;
  nlohmann::json pruned = nlohmann::json::object();
  for (const auto& [layer, heads] : config.pruned_heads) pruned[std::to_string(layer)] = heads;
  if (pruned.empty())
    out.erase("pruned_heads");
  else
    out["pruned_heads"] = pruned;
  // Feed-forward neuron pruning (PretrainedModel::prune_neurons) narrows every layer alike.
  if (config.family != ModelFamily::gpt2)
    out["intermediate_size"] = config.intermediate_size;
  else if (config.intermediate_size != 4 * config.hidden_size || (out.contains("n_inner") && !out["n_inner"].is_null()))
    out["n_inner"] = config.intermediate_size;
  out.erase("torch_dtype");
  out["dtype"] = dtype_name;
  return out;
}

}  // namespace dsee
