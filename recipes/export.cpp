// The export formats of a model: see export.h.
//
// Note [The PEFT adapter]
// ~~~~~~~~~~~~~~~~~~~~~~~
// PEFT's LoRA computes y = W x + b + (α/r)·B·A·x, the same update as dsee's
// lora, with lora_A.weight [r, in] and lora_B.weight [out, r] as dsee's A and
// B. PEFT names the saved tensors "base_model.model.<HF module>.lora_A.weight"
// (adapter name removed), and the task head, trained through
// modules_to_save, "base_model.model.<HF tensor name>". target_modules lists
// the adapted modules' full names, which PEFT matches exactly. GPT-2's c_attn
// is a Conv1D (stored in×out): fan_in_fan_out = true, the tensors unchanged.
// What PEFT's LoRA cannot express is refused: S (DSEE), masks and removed
// heads (pruning), a third of c_attn, and the in-place methods (full,
// bitfit, top_k).
#include "recipes/export.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "base/error.h"
#include "base/files.h"
#include "core/io/safetensors.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"
#include "core/tuning/tuning.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// Note [Exporting adapters]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// An adapter (tuning.h (2)) is non-linear, so it cannot be merged into the
// projection it follows. --format hf writes the base model with its trained
// layer norms and head as the HF folder, plus adapters.safetensors: every
// adapter tensor under the name of the transformers module it follows
// ("bert.encoder.layer.0.attention.output.dense.adapter.down.weight",
// "transformer.h.0.mlp.c_proj.adapter.up.bias"), fp32, with the metadata
// adapter_size and adapter_activation. A forward hook on each such module
// returning h + up(act(down(h))) reproduces the run (docs/export.md).
// Note [Exporting prefixes]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// Prefixes (tuning.h (3)) are extra keys and values, not a weight, so they
// cannot merge either. Both formats write them as PEFT's PrefixTuning adapter
// (what PEFT 0.21's save_pretrained writes for it): adapter_config.json
// (peft_type PREFIX_TUNING, num_virtual_tokens L, token_dim, num_layers,
// num_attention_heads, prefix_projection false) and adapter_model.safetensors
// holding "prompt_embeddings" = P [L, 2·layers·hidden] fp32 (the projection
// evaluated once: PEFT in inference mode reads P itself, as it does with its
// own projection) and the trained head as "base_model.<HF name>" (PEFT's
// modules_to_save). --format hf writes the base model with its trained head
// and the adapter in its subfolder prefix/ (an adapter_config.json beside
// config.json would make transformers' from_pretrained load it itself, and
// refuse a prompt-learning adapter), so PeftModel.from_pretrained(
// Auto…(export), export/prefix) loads the run; --format peft writes the
// adapter alone, for the run's base model.
void export_prefix(PretrainedModel& model, ModelTuning& tuning, const fs::path& out) {
  const auto prompt = prefix_embeddings(model);
  DSEE_ASSERT(prompt.defined(), "a prefix run without a prefix attached");
  NamedTensors tensors{{"prompt_embeddings", prompt.cpu().contiguous()}};
  std::set<std::string> head_modules;
  for (const auto& [name, tensor] : tuning.trainable_parameters()) {
    if (name.starts_with("prefix.")) continue;
    tensors.emplace_back("base_model." + name, tensor.detach().to(at::kFloat).cpu().contiguous());
    head_modules.insert(name.substr(0, name.find('.')));
  }
  const auto& config = model.config();
  const bool classifier = config.family != ModelFamily::gpt2;
  nlohmann::json adapter = {
      {"peft_type", "PREFIX_TUNING"},
      {"task_type", classifier ? "SEQ_CLS" : "CAUSAL_LM"},
      {"num_virtual_tokens", prompt.size(0)},
      {"token_dim", config.hidden_size},
      {"num_transformer_submodules", 1},
      {"num_attention_heads", config.num_heads},
      {"num_layers", config.num_layers},
      {"encoder_hidden_size", config.hidden_size},
      {"prefix_projection", false},
      {"init_weights", nullptr},
      {"modules_to_save", head_modules.empty()
                              ? nlohmann::json(nullptr)
                              : nlohmann::json(std::vector<std::string>(head_modules.begin(), head_modules.end()))},
      {"inference_mode", true},
      {"base_model_name_or_path", nullptr},
  };
  folder_create(out);
  file_write_json(out / "adapter_config.json", adapter);
  safetensors_save(out / "adapter_model.safetensors", tensors, {{"format", "pt"}});
}

void export_hf(PretrainedModel& model, ModelTuning& tuning, const fs::path& out) {
  if (model.attention_prefix) {
    export_prefix(model, tuning, out / "prefix");
    model_merge(model);
    model_save(model, out);
    return;
  }
  NamedTensors adapters;
  const std::string prefix = model.has_task_head() ? model.family_prefix() : "";
  for (const auto& [name, tensor] : tuning.trainable_parameters())
    if (name.find(".adapter.") != std::string::npos)
      adapters.push_back({prefix + name, tensor.detach().to(at::kFloat).cpu().contiguous()});
  model_merge(model);
  model_save(model, out);
  if (adapters.empty()) return;
  const auto& options = tuning.options();
  const char* activation = options.adapter_activation == Activation::relu       ? "relu"
                           : options.adapter_activation == Activation::gelu_new ? "gelu_new"
                                                                                : "gelu";
  safetensors_save(
      out / "adapters.safetensors", adapters,
      {{"format", "pt"}, {"adapter_size", std::to_string(options.adapter_size)}, {"adapter_activation", activation}});
}

void export_peft(PretrainedModel& model, ModelTuning& tuning, const fs::path& out) {
  const auto method = tuning.options().method;
  DSEE_CHECK(method != TuningMethod::dsee,
             "export --format peft: this is a DSEE run; its sparse residual S (on Ω) has no PEFT equivalent, so "
             "PEFT's LoRA cannot reproduce the model. Use --format hf (the merged model)");
  DSEE_CHECK(method != TuningMethod::adapter,
             "export --format peft: PEFT has no Houlsby adapter. Use --format hf (the base model plus "
             "adapters.safetensors, applied with forward hooks as docs/export.md shows)");
  if (method == TuningMethod::prefix) {
    // The base model then comes from its own checkpoint: a tensor that
    // checkpoint lacked must be in the adapter (the LoRA check below).
    const auto trained = tuning.trainable_parameters();
    for (const auto& name : model.new_head_tensors())
      DSEE_CHECK(std::any_of(trained.begin(), trained.end(), [&](const auto& t) { return t.name == name; }),
                 "export --format peft: '{}' is not in the base model's checkpoint and was not trained, so the base "
                 "model transformers loads would differ from the run's. Use --format hf",
                 name);
    export_prefix(model, tuning, out);
    return;
  }
  DSEE_CHECK(method == TuningMethod::lora,
             "export --format peft: this is a {} run, which trains model tensors in place and has no adapter. Use "
             "--format hf",
             tuning_method_name(method));
  DSEE_CHECK(model.config().pruned_heads.empty(),
             "export --format peft: this run removed attention heads (prune.kind = heads); PEFT loads an adapter "
             "onto the unpruned base model, so it cannot reproduce the pruned model. Use --format hf");
  for (const auto& [name, linear] : model.linears())
    DSEE_CHECK(!linear->mask.defined(),
               "export --format peft: this run pruned weights (prune.kind = unstructured; '{}' has a mask); PEFT "
               "loads an adapter onto the unpruned base model, so it cannot reproduce the pruned model. Use --format "
               "hf",
               name);

  // Where each HF tensor lives (for the family prefix) and which are new.
  std::map<std::string, bool> in_base_model;
  for (const auto& slot : model.tensor_slots()) in_base_model[slot.name] = slot.in_base_model;
  const auto full_name = [&](const std::string& name) {
    const auto it = in_base_model.find(name);
    return (it != in_base_model.end() && it->second && model.has_task_head() ? model.family_prefix() : "") + name;
  };

  NamedTensors tensors;
  std::set<std::string> targets, trained;
  bool fan_in_fan_out = false;
  for (const auto* update : tuning.updates()) {
    const auto& m = update->matrix;
    DSEE_CHECK(m.row_offset == 0 && m.rows == m.linear->out_features(),
               "export --format peft: '{}' adapts a third of GPT-2's c_attn; PEFT's LoRA adapts whole modules. Use "
               "--format hf",
               m.prefix);
    const std::string module = full_name(m.module + ".weight");
    const std::string prefix = "base_model.model." + module.substr(0, module.size() - std::string(".weight").size());
    targets.insert(prefix.substr(std::string("base_model.model.").size()));
    tensors.emplace_back(prefix + ".lora_A.weight", update->lora_A.detach().to(at::kFloat).cpu());
    tensors.emplace_back(prefix + ".lora_B.weight", update->lora_B.detach().to(at::kFloat).cpu());
    fan_in_fan_out = model.config().family == ModelFamily::gpt2;
    trained.insert(m.prefix + ".lora_A");
    trained.insert(m.prefix + ".lora_B");
  }
  std::set<std::string> head_modules;
  for (const auto& [name, tensor] : tuning.trainable_parameters()) {
    if (trained.count(name) || name.ends_with(".sparse_values")) continue;
    tensors.emplace_back("base_model.model." + full_name(name), tensor.detach().to(at::kFloat).cpu());
    head_modules.insert(name.substr(0, name.find('.')));
  }
  // A tensor the checkpoint lacked, initialised by dsee and not trained, is
  // not in the adapter: transformers would initialise it differently.
  for (const auto& name : model.new_head_tensors()) {
    const bool saved = std::any_of(tensors.begin(), tensors.end(),
                                   [&](const auto& t) { return t.name == "base_model.model." + name; });
    DSEE_CHECK(saved,
               "export --format peft: '{}' is not in the base model's checkpoint and was not trained, so the base "
               "model transformers loads would differ from the run's. Use --format hf",
               name);
  }

  const auto& options = tuning.options();
  const bool classifier = !head_modules.empty();
  const double alpha = options.alpha;
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", classifier ? "SEQ_CLS" : "CAUSAL_LM"},
      {"r", options.rank},
      {"lora_alpha",
       alpha == std::floor(alpha) ? nlohmann::json(static_cast<std::int64_t>(alpha)) : nlohmann::json(alpha)},
      {"lora_dropout", options.dropout},
      {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
      {"fan_in_fan_out", fan_in_fan_out},
      {"bias", "none"},
      {"modules_to_save",
       classifier ? nlohmann::json(std::vector<std::string>(head_modules.begin(), head_modules.end())) : nullptr},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"base_model_name_or_path", nullptr},
  };
  folder_create(out);
  const auto config_path = out / "adapter_config.json";
  file_write_json(config_path, config);
  safetensors_save(out / "adapter_model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace

void export_write(PretrainedModel& model, ModelTuning& tuning, ExportFormat format, const fs::path& out) {
  if (format == ExportFormat::hf)
    export_hf(model, tuning, out);
  else
    export_peft(model, tuning, out);
  spdlog::info("export: {} → {}", export_format_name(format), out.string());
}

}  // namespace dsee
