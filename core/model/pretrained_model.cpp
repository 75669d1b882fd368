// Loading and saving Hugging Face model folders; see pretrained_model.h.
#include "core/model/pretrained_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <numeric>
#include <set>

#include "base/error.h"
#include "base/files.h"
#include "base/log.h"
#include "base/shape_text.h"
#include "core/io/safetensors.h"
#include "core/model/bert.h"
#include "core/model/gpt2.h"

namespace dsee {

void slots_add_linear(std::vector<TensorSlot>& slots, const std::string& name, Linear& linear, bool in_base_model,
                      bool task_head, bool stored_in_by_out) {
  slots.push_back({name + ".weight", &linear.weight, in_base_model, task_head, stored_in_by_out});
  slots.push_back({name + ".bias", &linear.bias, in_base_model, task_head, false});
}

void slots_add_norm(std::vector<TensorSlot>& slots, const std::string& name, LayerNorm& norm) {
  slots.push_back({name + ".weight", &norm.weight, true, false, false});
  slots.push_back({name + ".bias", &norm.bias, true, false, false});
}

std::string PretrainedModel::family_prefix() const {
  return config_.family == ModelFamily::gpt2 ? "transformer." : std::string(model_family_name(config_.family)) + ".";
}

Linear& PretrainedModel::linear(const std::string& name) {
  const auto prefix = family_prefix();
  const auto bare = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
  for (auto& [candidate, linear] : linears())
    if (candidate == bare) return *linear;
  throw Error(fmt::format("the {} model has no projection \"{}\" (names are Hugging Face module names such as \"{}\")",
                          model_family_name(config_.family), name, linears().front().first));
}

void PretrainedModel::prune_heads(const std::map<std::int64_t, std::vector<std::int64_t>>& heads) {
  for (const auto& [layer, remove] : heads) {
    DSEE_CHECK(layer >= 0 && layer < config_.num_layers, "prune_heads: no layer {} (the model has {})", layer,
               config_.num_layers);
    auto& current = layer_heads(layer);
    const std::set<std::int64_t> removed(remove.begin(), remove.end());
    std::vector<std::int64_t> positions, kept;
    for (std::size_t i = 0; i < current.size(); ++i)
      if (!removed.count(current[i])) {
        positions.push_back(std::int64_t(i));
        kept.push_back(current[i]);
      }
    if (kept.size() == current.size()) continue;
    DSEE_CHECK(!kept.empty(), "prune_heads: removing every head of layer {} is not supported", layer);
    layer_keep_heads(layer, positions);
    current = kept;
    auto& recorded = config_.pruned_heads[layer];
    recorded.clear();
    for (std::int64_t h = 0; h < config_.num_heads; ++h)
      if (!std::binary_search(kept.begin(), kept.end(), h)) recorded.push_back(h);
  }
}

std::pair<std::string, std::string> PretrainedModel::feed_forward_modules(std::int64_t layer) const {
  if (config_.family == ModelFamily::gpt2)
    return {fmt::format("h.{}.mlp.c_fc", layer), fmt::format("h.{}.mlp.c_proj", layer)};
  return {fmt::format("encoder.layer.{}.intermediate.dense", layer),
          fmt::format("encoder.layer.{}.output.dense", layer)};
}

std::vector<std::int64_t> PretrainedModel::kept_neurons(std::int64_t layer) const {
  DSEE_CHECK(layer >= 0 && layer < config_.num_layers, "kept_neurons: no layer {} (the model has {})", layer,
             config_.num_layers);
  if (!kept_neurons_.empty()) return kept_neurons_[std::size_t(layer)];
  std::vector<std::int64_t> all(std::size_t(config_.intermediate_size));
  std::iota(all.begin(), all.end(), std::int64_t{0});
  return all;
}

void PretrainedModel::prune_neurons(const std::map<std::int64_t, std::vector<std::int64_t>>& neurons) {
  if (neurons.empty()) return;
  if (kept_neurons_.empty()) built_intermediate_size_ = config_.intermediate_size;
  // Every layer's new list first: nothing changes on an error.
  std::vector<std::vector<std::int64_t>> kept, positions(std::size_t(config_.num_layers));
  for (std::int64_t layer = 0; layer < config_.num_layers; ++layer) kept.push_back(kept_neurons(layer));
  std::vector<bool> shrinks(std::size_t(config_.num_layers), false);
  for (const auto& [layer, remove] : neurons) {
    DSEE_CHECK(layer >= 0 && layer < config_.num_layers, "prune_neurons: no layer {} (the model has {})", layer,
               config_.num_layers);
    const std::set<std::int64_t> removed(remove.begin(), remove.end());
    for (const auto id : removed)
      DSEE_CHECK(id >= 0 && id < built_intermediate_size_,
                 "prune_neurons: layer {} has no feed-forward neuron {} (the model was built with {}: ids 0..{})",
                 layer, id, built_intermediate_size_, built_intermediate_size_ - 1);
    auto& current = kept[std::size_t(layer)];
    std::vector<std::int64_t> left;
    for (std::size_t i = 0; i < current.size(); ++i)
      if (!removed.count(current[i])) {
        positions[std::size_t(layer)].push_back(std::int64_t(i));
        left.push_back(current[i]);
      }
    DSEE_CHECK(!left.empty(), "prune_neurons: removing every feed-forward neuron of layer {} is not supported", layer);
    shrinks[std::size_t(layer)] = left.size() < current.size();
    current = std::move(left);
  }
  for (std::size_t layer = 1; layer < kept.size(); ++layer)
    DSEE_CHECK(kept[layer].size() == kept[0].size(),
               "prune_neurons: layer {} would keep {} feed-forward neurons and layer 0 {}; every layer must keep the "
               "same number (a Hugging Face config has one intermediate_size)",
               layer, kept[layer].size(), kept[0].size());
  for (std::int64_t layer = 0; layer < config_.num_layers; ++layer) {
    if (!shrinks[std::size_t(layer)]) continue;
    const auto index = at::tensor(positions[std::size_t(layer)], at::kLong);
    const auto [in, out] = feed_forward_modules(layer);
    linear(in).keep_rows(index);
    linear(out).keep_columns(index);
  }
  kept_neurons_ = std::move(kept);
  config_.intermediate_size = std::int64_t(kept_neurons_.front().size());
}

namespace {

// Tensors of other heads and non-persistent buffers that old checkpoints
// carry: skipped, listed in one log line.
bool checkpoint_extra_is_known(const PretrainedModel& model, const std::string& name) {
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const auto starts_with = [&](const std::string& prefix) { return name.rfind(prefix, 0) == 0; };
  if (ends_with("embeddings.position_ids") || ends_with("embeddings.token_type_ids")) return true;
  switch (model.config().family) {
    case ModelFamily::bert:
      return starts_with("cls.") || (!model.has_task_head() && starts_with("classifier."));
    case ModelFamily::roberta:
      return starts_with("lm_head.") || ends_with("pooler.dense.weight") || ends_with("pooler.dense.bias") ||
             (!model.has_task_head() && starts_with("classifier."));
    case ModelFamily::gpt2:
      return name == "lm_head.weight" || ends_with(".attn.bias") || ends_with(".attn.masked_bias");
  }
  return false;
}

// The names a tensor may have in a checkpoint: its own, and for layer norms
// the TensorFlow-era gamma/beta that old BERT checkpoints (bert-base-uncased's
// model.safetensors among them) still use and transformers renames on load.
std::vector<std::string> checkpoint_names_of(const std::string& name) {
  std::vector<std::string> names{name};
  const auto dot = name.rfind('.');
  const auto module = name.substr(0, dot), leaf = name.substr(dot + 1);
  if (module.ends_with("LayerNorm") && (leaf == "weight" || leaf == "bias"))
    names.push_back(module + (leaf == "weight" ? ".gamma" : ".beta"));
  return names;
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      DSEE_ASSERT(false, "unexpected model dtype {}", c10::toString(dtype));
  }
}

std::string architecture_name(const PretrainedModel& model) {
  switch (model.config().family) {
    case ModelFamily::bert:
      return model.has_task_head() ? "BertForSequenceClassification" : "BertModel";
    case ModelFamily::roberta:
      return model.has_task_head() ? "RobertaForSequenceClassification" : "RobertaModel";
    case ModelFamily::gpt2:
      return "GPT2LMHeadModel";
  }
  DSEE_ASSERT(false, "unknown family");
}

}  // namespace

at::ScalarType model_dtype_of_precision(const std::string& precision) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "bf16") return at::kBFloat16;
  throw Error(fmt::format("unknown precision '{}' (expected fp32 or bf16)", precision));
}

// Note [Loading a checkpoint]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The model is built from config.json with uninitialised tensors, then every
// tensor slot is filled from the checkpoint by its HF name: base-model names
// are looked up with the family prefix when the checkpoint uses it (any name
// starts with it), else bare, and the other form as a fallback. Checkpoint
// tensors may be F32, F16 or BF16 and are converted to the requested dtype;
// GPT-2 Conv1D weights are transposed to [out, in] on the way.
//   missing      only task-head tensors (the classifier, BERT's pooler) may be
//                missing: they are initialised as transformers does (normal
//                with initializer_range, zero bias) and listed in one log
//                line. Anything else missing is an error naming the tensor
//                and the shape expected.
//   wrong shape  an error naming tensor, expected and actual shape.
//   old names    a LayerNorm's weight/bias may be stored as gamma/beta.
//   left over    tensors of other heads (BERT's cls.*, RoBERTa's lm_head.*
//                and pooler, a classifier when loading the base model), GPT-2's
//                tied lm_head.weight and attention-mask buffers (attn.bias,
//                attn.masked_bias, position_ids) are skipped with one log
//                line; any other left-over tensor is an error.
std::unique_ptr<PretrainedModel> model_load(const std::filesystem::path& dir, const ModelLoadOptions& options) {
  DSEE_CHECK(options.dtype == at::kFloat || options.dtype == at::kBFloat16, "models load into fp32 or bf16, not {}",
             c10::toString(options.dtype));
  ModelConfig config = model_config_load(dir);
  const auto checkpoint = SafetensorsCheckpoint::open(dir);
  const std::string source = checkpoint.describe();

  std::unique_ptr<PretrainedModel> model;
  if (config.family == ModelFamily::gpt2) {
    model = std::make_unique<Gpt2Model>(std::move(config), options.dtype, options.device);
  } else {
    const bool head = options.task == ModelTask::sequence_classification ||
                      (options.task == ModelTask::automatic && config.has_sequence_classification_head());
    if (head && options.num_labels > 0 && options.num_labels != config.num_labels) {
      config.num_labels = options.num_labels;
      config.id2label.clear();
      for (std::int64_t i = 0; i < config.num_labels; ++i) config.id2label.push_back(fmt::format("LABEL_{}", i));
    }
    model = std::make_unique<EncoderModel>(std::move(config), head, options.dtype, options.device);
  }

  const auto names = checkpoint.names();
  const auto prefix = model->family_prefix();
  const bool prefixed =
      std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(prefix, 0) == 0; });
  std::set<std::string> unused(names.begin(), names.end());
  std::vector<std::string> initialised, missing;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.head_seed);
  for (const auto& slot : model->tensor_slots()) {
    std::vector<std::int64_t> expected = slot.tensor->sizes().vec();
    if (slot.stored_in_by_out) std::reverse(expected.begin(), expected.end());
    std::string found;
    for (const auto& name : checkpoint_names_of(slot.name)) {
      const auto candidates = !slot.in_base_model ? std::vector{name}
                              : prefixed          ? std::vector{prefix + name, name}
                                                  : std::vector{name, prefix + name};
      for (const auto& candidate : candidates)
        if (found.empty() && checkpoint.contains(candidate)) found = candidate;
    }
    if (found.empty()) {
      const auto wanted = (slot.in_base_model && prefixed ? prefix : "") + slot.name;
      if (!slot.task_head) {
        missing.push_back(fmt::format("{} {}", wanted, shape_text(expected)));
        continue;
      }
      // Initialised on the CPU in fp32 from a seeded generator: the same head
      // on every rank and device.
      auto value = at::empty(slot.tensor->sizes(), at::kFloat);
      if (slot.tensor->dim() == 2)
        value.normal_(0.0, model->config().initializer_range, generator);
      else
        value.zero_();
      slot.tensor->copy_(value);
      initialised.push_back(wanted);
      continue;
    }
    unused.erase(found);
    const auto stored = checkpoint.tensor(found);
    DSEE_CHECK(stored.sizes().vec() == expected, "{}: tensor \"{}\" has shape {}, the config implies {}{}", source,
               found, shape_text(stored.sizes()), shape_text(expected),
               model->config().pruned_heads.empty() ? "" : " (pruned_heads counted)");
    const auto dtype = stored.scalar_type();
    DSEE_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
               "{}: tensor \"{}\" is {}; model weights must be F32, F16 or BF16", source, found, c10::toString(dtype));
    slot.tensor->copy_(slot.stored_in_by_out ? stored.t() : stored);
  }
  DSEE_CHECK(missing.empty(), "{}: {} tensor(s) missing from the checkpoint (name and expected shape): {}", source,
             missing.size(), fmt::join(missing, ", "));
  std::vector<std::string> skipped, unexpected;
  for (const auto& name : unused) (checkpoint_extra_is_known(*model, name) ? skipped : unexpected).push_back(name);
  if (!unexpected.empty()) {
    std::vector<std::string> described;
    for (const auto& name : unexpected)
      described.push_back(fmt::format("{} {}", name, shape_text(checkpoint.tensor(name).sizes())));
    throw Error(fmt::format("{}: {} unexpected tensor(s) for a {} ({}): {}", source, unexpected.size(),
                            architecture_name(*model), "not part of the model dsee builds from config.json",
                            fmt::join(described, ", ")));
  }
  model->set_new_head_tensors(initialised);
  if (!initialised.empty())
    spdlog::info("{}: new task head, initialised (not in the checkpoint): {}", dir.string(),
                 fmt::join(initialised, ", "));
  if (!skipped.empty())
    spdlog::info("{}: skipped {} tensor(s) of other heads and buffers: {}", dir.string(), skipped.size(),
                 fmt::join(skipped, ", "));
  return model;
}

void model_save(PretrainedModel& model, const std::filesystem::path& dir) {
  folder_create(dir);
  const auto prefix = model.has_task_head() ? model.family_prefix() : std::string();
  NamedTensors tensors;
  for (const auto& slot : model.tensor_slots()) {
    const auto& t = *slot.tensor;
    tensors.emplace_back((slot.in_base_model ? prefix : "") + slot.name,
                         (slot.stored_in_by_out ? t.t() : t).detach().to(at::kCPU).to(model.dtype()).contiguous());
  }
  safetensors_save(dir / "model.safetensors", tensors, {{"format", "pt"}});
  auto json = model_config_to_json(model.config(), dtype_name(model.dtype()));
  json["architectures"] = {architecture_name(model)};
  const auto path = dir / "config.json";
  file_write_json(path, json);
}

}  // namespace dsee
