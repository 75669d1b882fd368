// BERT / RoBERTa encoder and classification heads; see bert.h.
#include "core/model/bert.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "base/error.h"
#include "base/shape_text.h"

namespace dsee {
EncoderModel::EncoderModel(ModelConfig config, bool classification_head, at::ScalarType dtype, c10::Device device)
    : PretrainedModel(std::move(config), dtype, device), classification_head_(classification_head) {
  const auto& c = config_;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  word_embeddings_ = at::empty({c.vocab_size, c.hidden_size}, options);
  position_embeddings_ = at::empty({c.max_positions, c.hidden_size}, options);
  token_type_embeddings_ = at::empty({c.type_vocab_size, c.hidden_size}, options);
  embeddings_norm_ = layer_norm_empty(c.hidden_size, c.layer_norm_eps, options);
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    EncoderLayer layer;
    auto& a = layer.attention;
    a.heads = c.kept_heads(i);
    a.head_dim = c.head_dim();
    const auto width = std::int64_t(a.heads.size()) * a.head_dim;
    a.query = linear_empty(width, c.hidden_size, options);
    a.key = linear_empty(width, c.hidden_size, options);
    a.value = linear_empty(width, c.hidden_size, options);
    a.output = linear_empty(c.hidden_size, width, options);
    a.output_norm = layer_norm_empty(c.hidden_size, c.layer_norm_eps, options);
    layer.intermediate = linear_empty(c.intermediate_size, c.hidden_size, options);
    layer.output = linear_empty(c.hidden_size, c.intermediate_size, options);
    layer.output_norm = layer_norm_empty(c.hidden_size, c.layer_norm_eps, options);
    layers_.push_back(std::move(layer));
  }
  if (c.family == ModelFamily::bert) pooler_ = linear_empty(c.hidden_size, c.hidden_size, options);
  if (classification_head_) {
    classifier_ = linear_empty(c.num_labels, c.hidden_size, options);
    if (c.family == ModelFamily::roberta) classifier_dense_ = linear_empty(c.hidden_size, c.hidden_size, options);
  }
}

std::vector<TensorSlot> EncoderModel::tensor_slots() {
  std::vector<TensorSlot> slots;
  slots.push_back({"embeddings.word_embeddings.weight", &word_embeddings_, true, false, false});
  slots.push_back({"embeddings.position_embeddings.weight", &position_embeddings_, true, false, false});
  slots.push_back({"embeddings.token_type_embeddings.weight", &token_type_embeddings_, true, false, false});
  slots_add_norm(slots, "embeddings.LayerNorm", embeddings_norm_);
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    const auto p = fmt::format("encoder.layer.{}.", i);
    slots_add_linear(slots, p + "attention.self.query", layer.attention.query, true, false, false);
    slots_add_linear(slots, p + "attention.self.key", layer.attention.key, true, false, false);
    slots_add_linear(slots, p + "attention.self.value", layer.attention.value, true, false, false);
    slots_add_linear(slots, p + "attention.output.dense", layer.attention.output, true, false, false);
    slots_add_norm(slots, p + "attention.output.LayerNorm", layer.attention.output_norm);
    slots_add_linear(slots, p + "intermediate.dense", layer.intermediate, true, false, false);
    slots_add_linear(slots, p + "output.dense", layer.output, true, false, false);
    slots_add_norm(slots, p + "output.LayerNorm", layer.output_norm);
  }
  // The pooler belongs to BertModel, but a checkpoint trained without NSP
  // may lack it; transformers then initialises it, and so does dsee.
  if (pooler_) slots_add_linear(slots, "pooler.dense", *pooler_, true, true, false);
  if (classification_head_) {
    if (config_.family == ModelFamily::roberta) {
      slots_add_linear(slots, "classifier.dense", classifier_dense_, false, true, false);
      slots_add_linear(slots, "classifier.out_proj", classifier_, false, true, false);
    } else {
      slots_add_linear(slots, "classifier", classifier_, false, true, false);
    }
  }
  return slots;
}

std::vector<std::pair<std::string, Linear*>> EncoderModel::linears() {
  std::vector<std::pair<std::string, Linear*>> all;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    const auto p = fmt::format("encoder.layer.{}.", i);
    all.emplace_back(p + "attention.self.query", &layer.attention.query);
    all.emplace_back(p + "attention.self.key", &layer.attention.key);
    all.emplace_back(p + "attention.self.value", &layer.attention.value);
    all.emplace_back(p + "attention.output.dense", &layer.attention.output);
    all.emplace_back(p + "intermediate.dense", &layer.intermediate);
    all.emplace_back(p + "output.dense", &layer.output);
  }
  if (pooler_) all.emplace_back("pooler.dense", &*pooler_);
  if (classification_head_) {
    if (config_.family == ModelFamily::roberta) {
      all.emplace_back("classifier.dense", &classifier_dense_);
      all.emplace_back("classifier.out_proj", &classifier_);
    } else {
      all.emplace_back("classifier", &classifier_);
    }
  }
  return all;
}

at::Tensor EncoderModel::position_ids(const at::Tensor& input_ids, std::int64_t past) const {
  const auto seq = input_ids.size(1);
  if (config_.family == ModelFamily::roberta) {
    const auto pad = *config_.pad_token_id;
    const auto real = input_ids.ne(pad).to(at::kLong);
    return (at::cumsum(real, 1) + past) * real + pad;
  }
  return at::arange(past, past + seq, input_ids.options().dtype(at::kLong)).unsqueeze(0).expand_as(input_ids);
}

ModelOutput EncoderModel::forward(const ModelInput& input) {
  const auto& ids = input.input_ids;
  DSEE_CHECK(ids.dim() == 2 && ids.size(1) > 0, "input_ids must be [batch, seq] with seq > 0, got {}",
             shape_text(ids.sizes()));
  DSEE_CHECK(input.cache == nullptr, "{} has no key/value cache", model_family_name(config_.family));
  // AttentionPrefix: L prefix keys/values per layer [2·layers, heads, L, d].
  const auto prefix =
      attention_prefix && attention_prefix->length() > 0 ? attention_prefix->keys_values() : at::Tensor();
  const std::int64_t prefix_length = prefix.defined() ? prefix.size(2) : 0;
  const auto positions = position_ids(ids, prefix_length);
  DSEE_CHECK(positions.max().item<std::int64_t>() < config_.max_positions,
             "a sequence of {} tokens after {} prefix positions needs more than the {} positions of this model",
             ids.size(1), prefix_length, config_.max_positions - config_.position_offset);
  const auto token_types = input.token_type_ids.defined() ? input.token_type_ids : at::zeros_like(ids);
  DSEE_CHECK(token_types.sizes() == ids.sizes(), "token_type_ids {} must have the shape of input_ids {}",
             shape_text(token_types.sizes()), shape_text(ids.sizes()));
  at::Tensor hidden = at::embedding(word_embeddings_, ids) + at::embedding(token_type_embeddings_, token_types) +
                      at::embedding(position_embeddings_, positions);
  hidden = embeddings_norm_.forward(hidden);

  // [batch, 1, 1, seq]: every query may attend to the real tokens.
  at::Tensor allowed;
  if (input.attention_mask.defined()) {
    DSEE_CHECK(input.attention_mask.sizes() == ids.sizes(), "attention_mask {} must have the shape of input_ids {}",
               shape_text(input.attention_mask.sizes()), shape_text(ids.sizes()));
    if (!input.attention_mask.all().item<bool>()) {
      allowed = input.attention_mask.to(at::kBool);
      if (prefix_length > 0)  // every query sees the prefix
        allowed = at::cat({at::ones({ids.size(0), prefix_length}, allowed.options()), allowed}, 1);
      allowed = allowed.view({ids.size(0), 1, 1, prefix_length + ids.size(1)});
    }
  }

  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    auto& a = layer.attention;
    const auto heads = std::int64_t(a.heads.size());
    // ModelInput::first_token_only: the last layer's queries and everything
    // after the attention for position 0 alone (the rows the heads read).
    const bool first_only = input.first_token_only && i + 1 == layers_.size();
    const auto queries = first_only ? hidden.narrow(1, 0, 1) : hidden;
    const auto q = heads_split(a.query.forward(queries), heads);
    auto k = heads_split(a.key.forward(hidden), heads);
    auto v = heads_split(a.value.forward(hidden), heads);
    if (prefix_length > 0) {
      k = at::cat({prefix[2 * i].unsqueeze(0).expand({k.size(0), -1, -1, -1}), k}, 2);
      v = at::cat({prefix[2 * i + 1].unsqueeze(0).expand({v.size(0), -1, -1, -1}), v}, 2);
    }
    const auto context = heads_merge(attention(q, k, v, allowed, false, 1.0 / std::sqrt(double(a.head_dim))));
    hidden = a.output_norm.forward(a.output.forward(context) + queries);
    const auto inner = activation_apply(config_.activation, layer.intermediate.forward(hidden));
    hidden = layer.output_norm.forward(layer.output.forward(inner) + hidden);
  }

  ModelOutput out;
  out.last_hidden_state = hidden;
  const auto first = hidden.select(1, 0);
  if (pooler_) out.pooled = at::tanh(pooler_->forward(first));
  if (classification_head_) {
    if (config_.family == ModelFamily::roberta)
      out.logits = classifier_.forward(at::tanh(classifier_dense_.forward(first)));
    else
      out.logits = classifier_.forward(out.pooled);
  }
  return out;
}

std::vector<std::int64_t>& EncoderModel::layer_heads(std::int64_t layer) { return layers_[layer].attention.heads; }

void EncoderModel::layer_keep_heads(std::int64_t layer, const std::vector<std::int64_t>& positions) {
  auto& a = layers_[layer].attention;
  const auto rows = head_rows(positions, std::int64_t(a.heads.size()), a.head_dim, 1);
  a.query.keep_rows(rows);
  a.key.keep_rows(rows);
  a.value.keep_rows(rows);
  a.output.keep_columns(rows);
}

}  // namespace dsee
