// A pretrained model of one of the three families, loaded from and saved to a
// Hugging Face model folder (config.json + model.safetensors or shards).
//
// Classes (HF name → dsee):
//   BertModel, BertForSequenceClassification        EncoderModel (bert.h)
//   RobertaModel, RobertaForSequenceClassification  EncoderModel (bert.h)
//   GPT2Model, GPT2LMHeadModel                      Gpt2Model (gpt2.h)
// The task head is part of the same object (EncoderModel's classifier, GPT-2's tied
// LM head), so names, loading and saving follow the HF *For* class.
//
// Tensor names are HF's exactly. A base-model tensor is accepted with or
// without the family prefix ("bert.", "roberta.", "transformer."); a model
// with a task head saves with the prefix (as transformers does). See Note
// [Loading a checkpoint] in pretrained_model.cpp for what may be missing or
// left over.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/model/linear.h"
#include "core/model/model_config.h"
#include "core/model/transformer_layers.h"

namespace dsee {

// GPT-2's key/value cache for incremental decoding: per layer
// [batch, heads, past, head_dim]. Empty until the first forward fills it; each
// forward appends its keys/values. Prefix tuning can seed it with per-layer
// prefix keys/values before the first step. Beam search (core/train/
// generation.h) reorders its rows with reorder(), which the next forward
// applies while it appends (one copy of the cache per step, not two); until
// then keys/values hold the rows before the reorder.
struct KvCache {
  std::vector<at::Tensor> keys, values;
  at::Tensor pending_rows;  // int64 [batch]: the rows the next forward takes; undefined: all, in order
  std::int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
  std::int64_t batch() const { return pending_rows.defined() ? pending_rows.size(0) : keys.front().size(0); }
  // Row i becomes the old row rows[i] (int64 [new_batch], on the cache's device).
  void reorder(const at::Tensor& rows);
};

// Trainable key/value prefixes of every attention layer (prefix tuning on
// GPT-2, P-tuning v2 on BERT/RoBERTa; core/tuning/tuning.h (3)). A model with
// one attends from every query to L prefix positions before its tokens, as if
// they were a past of length L:
//   BERT/RoBERTa  keys/values [prefix ; tokens]; the attention mask gets L
//                 ones in front; positions start at L (BERT L..L+seq-1,
//                 RoBERTa (cumsum(real) + L)·real + pad), as transformers
//                 numbers them after a past of length L.
//   GPT-2         the prefix is the start of the key/value cache: a forward
//                 without a cache, or with an empty one (which it seeds),
//                 attends over [prefix ; tokens]; KvCache::length() counts the
//                 L prefix positions. ModelInput::attention_mask covers the
//                 tokens alone ([batch, past - L + seq]; the model adds the L
//                 ones); default positions are past..past+seq-1 (so L.. on the
//                 first forward) and given position_ids are shifted by L, as
//                 PEFT's PrefixTuning forward shifts them.
class AttentionPrefix {
 public:
  virtual ~AttentionPrefix() = default;
  virtual std::int64_t length() const = 0;  // L ≥ 0
  // Every layer's prefix: [2 · layers, heads, L, head_dim], layer i's keys at
  // 2i and values at 2i + 1, in the model's dtype; differentiable.
  virtual at::Tensor keys_values() const = 0;
};

struct ModelInput {
  at::Tensor input_ids;       // [batch, seq] int64
  at::Tensor attention_mask;  // [batch, past + seq], 1 token / 0 padding; undefined: all tokens
  at::Tensor position_ids;    // GPT-2: [batch, seq] int64; undefined: past..past+seq-1
  at::Tensor token_type_ids;  // [batch, seq] int64, BERT/RoBERTa; undefined: zeros
  KvCache* cache = nullptr;   // GPT-2: read and extended when set
  // The caller reads only `logits` and `pooled` (sequence classification).
  // BERT/RoBERTa then run the last layer for the first token alone — its
  // query, attention output and feed-forward; keys and values still cover
  // every token — since the heads read nothing else, and last_hidden_state
  // is [batch, 1, hidden]. GPT-2 ignores it (its logits cover every position).
  // Not used by dsee run: at one query row the CPU kernels' rounding depends
  // on how the process got there (a run resumed after a failure ended a few
  // ulps away from a straight one), which breaks bit-for-bit resume
  // (test_full_disk.cpp). bench_step --first-token-only measures it.
  bool first_token_only = false;
};

struct ModelOutput {
  at::Tensor last_hidden_state;  // [batch, seq, hidden]
  at::Tensor pooled;             // BERT: [batch, hidden] (pooler output); else undefined
  at::Tensor logits;             // [batch, num_labels] or GPT-2 [batch, seq, vocab]; undefined without a head
};

// One tensor of the model in the HF layout.
struct TensorSlot {
  std::string name;       // HF name without the family prefix ("encoder.layer.0...", "classifier.weight")
  at::Tensor* tensor;     // the model's tensor (replaced on load)
  bool in_base_model;     // under the family prefix in a *For* model
  bool task_head;         // a newly added head may lack it (initialised, logged)
  bool stored_in_by_out;  // GPT-2 Conv1D: the HF tensor is the transpose of ours
};

// The slots of a projection (weight, bias; stored_in_by_out applies to the
// weight) and of a layer norm (weight, bias; in the base model).
void slots_add_linear(std::vector<TensorSlot>& slots, const std::string& name, Linear& linear, bool in_base_model,
                      bool task_head, bool stored_in_by_out);
void slots_add_norm(std::vector<TensorSlot>& slots, const std::string& name, LayerNorm& norm);

enum class ModelTask {
  automatic,                // from config.json's architectures
  base,                     // BertModel / RobertaModel (GPT-2: always the LM head)
  sequence_classification,  // BERT/RoBERTa with a classification head (may be new)
};

class PretrainedModel {
 public:
  virtual ~PretrainedModel() = default;

  const ModelConfig& config() const { return config_; }
  virtual ModelOutput forward(const ModelInput& input) = 0;

  // Every tensor, HF order and names.
  virtual std::vector<TensorSlot> tensor_slots() = 0;
  // Every projection by HF module name without the family prefix
  // ("encoder.layer.3.attention.self.query", "h.5.attn.c_attn", "classifier").
  virtual std::vector<std::pair<std::string, Linear*>> linears() = 0;
  // One projection by HF name, with or without the prefix; dsee::Error if none.
  Linear& linear(const std::string& name);

  // Removes heads (original ids, as HF `pruned_heads`) from layers: Q/K/V
  // rows and attention-output columns shrink in place, config().pruned_heads
  // records it. Heads already removed are ignored.
  void prune_heads(const std::map<std::int64_t, std::vector<std::int64_t>>& heads);

  // Removes feed-forward neurons (original ids, 0 ≤ id < the intermediate
  // size the model was built with) from layers: rows of intermediate.dense
  // (GPT-2: mlp.c_fc) and columns of output.dense (mlp.c_proj) shrink in
  // place, an attached tuning through LinearTuning::keep_rows/_columns, and
  // config().intermediate_size becomes the new width. Every layer must end
  // with the same width (a Hugging Face config has one intermediate_size);
  // neurons already removed are ignored. dsee::Error before any change.
  void prune_neurons(const std::map<std::int64_t, std::vector<std::int64_t>>& neurons);
  // Original ids of the feed-forward neurons layer `layer` has now, ascending.
  std::vector<std::int64_t> kept_neurons(std::int64_t layer) const;
  // The feed-forward projections of a layer: {"…intermediate.dense", "…output.dense"}
  // (GPT-2: {"h.<layer>.mlp.c_fc", "h.<layer>.mlp.c_proj"}).
  std::pair<std::string, std::string> feed_forward_modules(std::int64_t layer) const;

  // "bert.", "roberta.", "transformer.".
  std::string family_prefix() const;
  // Whether saved names carry family_prefix() (a model with a task head).
  virtual bool has_task_head() const = 0;

  // Task-head tensors the checkpoint lacked, initialised by model_load (HF
  // names as saved); outputs computed from them are not the checkpoint's.
  const std::vector<std::string>& new_head_tensors() const { return new_head_tensors_; }
  void set_new_head_tensors(std::vector<std::string> names) { new_head_tensors_ = std::move(names); }

  // The dtype the model was built in: that of its frozen weights. Under
  // run.precision = bf16 the trainable task head is fp32 (tuning.h) while
  // dtype() stays bf16.
  at::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return device_; }

  // Key/value prefixes every layer attends to (see AttentionPrefix); null:
  // none. Set by tuning_attach (tuning.method prefix); the model does not own
  // what the prefix's tensors point into beyond this reference.
  std::shared_ptr<AttentionPrefix> attention_prefix;

 protected:
  // Original ids of the heads layer `layer` has now.
  virtual std::vector<std::int64_t>& layer_heads(std::int64_t layer) = 0;
  // Shrinks layer `layer` to the heads at these positions among its current ones.
  virtual void layer_keep_heads(std::int64_t layer, const std::vector<std::int64_t>& positions) = 0;

  PretrainedModel(ModelConfig config, at::ScalarType dtype, c10::Device device)
      : config_(std::move(config)), dtype_(dtype), device_(device) {}
  ModelConfig config_;
  at::ScalarType dtype_;
  c10::Device device_;
  std::vector<std::string> new_head_tensors_;

 private:
  // Per layer, the original neuron ids kept (prune_neurons); empty: none removed.
  std::vector<std::vector<std::int64_t>> kept_neurons_;
  std::int64_t built_intermediate_size_ = 0;  // config().intermediate_size before the first prune_neurons
};

// run.precision: "fp32" → kFloat, "bf16" → kBFloat16 (the dtype the frozen
// weights load in; docs/precision.md); dsee::Error naming both otherwise.
at::ScalarType model_dtype_of_precision(const std::string& precision);

struct ModelLoadOptions {
  at::ScalarType dtype = at::kFloat;  // fp32 or bf16 (model_dtype_of_precision)
  c10::Device device = c10::kCPU;
  ModelTask task = ModelTask::automatic;
  std::int64_t num_labels = 0;  // a new classification head's size; 0: config.json's
  std::uint64_t head_seed = 0;  // generator seed for a new head
};

// Loads DIR (config.json + safetensors); see Note [Loading a checkpoint].
std::unique_ptr<PretrainedModel> model_load(const std::filesystem::path& dir, const ModelLoadOptions& options = {});

// Writes DIR/config.json and DIR/model.safetensors in the HF layout, every
// tensor in the model's dtype (a bf16 model's fp32 head is rounded to bf16),
// so transformers' from_pretrained loads it.
void model_save(PretrainedModel& model, const std::filesystem::path& dir);

}  // namespace dsee
