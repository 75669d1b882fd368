// GPT-2 with the tied LM head and the key/value cache; see gpt2.h.
#include "core/model/gpt2.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "base/shape_text.h"

namespace dsee {
namespace {

// past [batch, heads, length, d] (its rows `rows` when defined, in that
// order) followed by now [new batch, heads, seq, d], in one copy.
at::Tensor cache_append(const at::Tensor& past, const at::Tensor& now, const at::Tensor& rows) {
  if (!rows.defined()) return at::cat({past, now}, 2);
  auto out = at::empty({now.size(0), now.size(1), past.size(2) + now.size(2), now.size(3)}, now.options());
  auto head = out.narrow(2, 0, past.size(2));
  at::index_select_out(head, past, 0, rows);
  out.narrow(2, past.size(2), now.size(2)).copy_(now);
  return out;
}

}  // namespace

Gpt2Model::Gpt2Model(ModelConfig config, at::ScalarType dtype, c10::Device device)
    : PretrainedModel(std::move(config), dtype, device) {
  const auto& c = config_;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  const auto norm = [&] { return layer_norm_empty(c.hidden_size, c.layer_norm_eps, options); };
  wte_ = at::empty({c.vocab_size, c.hidden_size}, options);
  wpe_ = at::empty({c.max_positions, c.hidden_size}, options);
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    Gpt2Block block;
    block.heads = c.kept_heads(i);
    block.head_dim = c.head_dim();
    const auto width = std::int64_t(block.heads.size()) * block.head_dim;
    block.ln_1 = norm();
    block.c_attn = linear_empty(3 * width, c.hidden_size, options);
    block.c_proj = linear_empty(c.hidden_size, width, options);
    block.ln_2 = norm();
    block.c_fc = linear_empty(c.intermediate_size, c.hidden_size, options);
    block.mlp_c_proj = linear_empty(c.hidden_size, c.intermediate_size, options);
    block.scale = c.scale_attn_weights ? 1.0 / std::sqrt(double(block.head_dim)) : 1.0;
    if (c.scale_attn_by_inverse_layer_idx) block.scale /= double(i + 1);
    blocks_.push_back(std::move(block));
  }
  ln_f_ = norm();
}

std::vector<TensorSlot> Gpt2Model::tensor_slots() {
  std::vector<TensorSlot> slots;
  slots.push_back({"wte.weight", &wte_, true, false, false});
  slots.push_back({"wpe.weight", &wpe_, true, false, false});
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    auto& b = blocks_[i];
    const auto p = fmt::format("h.{}.", i);
    slots_add_norm(slots, p + "ln_1", b.ln_1);
    slots_add_linear(slots, p + "attn.c_attn", b.c_attn, true, false, true);
    slots_add_linear(slots, p + "attn.c_proj", b.c_proj, true, false, true);
    slots_add_norm(slots, p + "ln_2", b.ln_2);
    slots_add_linear(slots, p + "mlp.c_fc", b.c_fc, true, false, true);
    slots_add_linear(slots, p + "mlp.c_proj", b.mlp_c_proj, true, false, true);
  }
  slots_add_norm(slots, "ln_f", ln_f_);
  return slots;
}

std::vector<std::pair<std::string, Linear*>> Gpt2Model::linears() {
  std::vector<std::pair<std::string, Linear*>> all;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    auto& b = blocks_[i];
    const auto p = fmt::format("h.{}.", i);
    all.emplace_back(p + "attn.c_attn", &b.c_attn);
    all.emplace_back(p + "attn.c_proj", &b.c_proj);
    all.emplace_back(p + "mlp.c_fc", &b.c_fc);
    all.emplace_back(p + "mlp.c_proj", &b.mlp_c_proj);
  }
  return all;
}

ModelOutput Gpt2Model::forward(const ModelInput& input) {
  const auto& ids = input.input_ids;
  DSEE_CHECK(ids.dim() == 2 && ids.size(1) > 0, "input_ids must be [batch, seq] with seq > 0, got {}",
             shape_text(ids.sizes()));
  const auto batch = ids.size(0), seq = ids.size(1);
  KvCache* cache = input.cache;
  // AttentionPrefix: the start of the cache. Without a cache, or with an
  // empty one, this forward puts the L prefix positions before its tokens;
  // a filled cache holds them already.
  const bool cache_filled = cache && !cache->keys.empty();
  const auto prefix = attention_prefix && attention_prefix->length() > 0 && !cache_filled
                          ? attention_prefix->keys_values()
                          : at::Tensor();
  const std::int64_t prefix_length = attention_prefix ? attention_prefix->length() : 0;
  const std::int64_t past = cache_filled ? cache->length() : prefix_length;
  DSEE_CHECK(past >= prefix_length, "the key/value cache holds {} positions, fewer than the {} prefix positions", past,
             prefix_length);
  const auto total = past + seq;
  DSEE_CHECK(total <= config_.max_positions, "{} tokens (past {} + new {}) exceed GPT-2's {} positions", total, past,
             seq, config_.max_positions);
  if (cache_filled)
    DSEE_CHECK(cache->keys.size() == blocks_.size() && cache->batch() == batch,
               "the key/value cache holds {} layers of batch {}, the model has {} layers and the input batch {}",
               cache->keys.size(), cache->batch(), blocks_.size(), batch);

  // Which keys each query sees: [batch or 1, 1, seq, total], or the kernel's
  // own causal mask when nothing else limits it.
  at::Tensor allowed;
  bool causal = false;
  const bool padded = input.attention_mask.defined() && !input.attention_mask.all().item<bool>();
  if (input.attention_mask.defined())
    DSEE_CHECK(input.attention_mask.dim() == 2 && input.attention_mask.size(0) == batch &&
                   input.attention_mask.size(1) == total - prefix_length,
               "attention_mask must be [batch, past + seq] = [{}, {}] (the tokens; {} prefix positions come on "
               "top), got {}",
               batch, total - prefix_length, prefix_length, shape_text(input.attention_mask.sizes()));
  at::Tensor token_mask = input.attention_mask;
  if (padded && prefix_length > 0)  // every query sees the prefix
    token_mask = at::cat({at::ones({batch, prefix_length}, token_mask.options()), token_mask}, 1);
  if (padded || (past > 0 && seq > 1)) {
    const auto options = ids.options().dtype(at::kLong);
    const auto query_positions = at::arange(past, total, options).unsqueeze(1);
    allowed = at::arange(total, options).unsqueeze(0).le(query_positions).view({1, 1, seq, total});
    if (padded) {
      // A left-padding query sees no key at all; let it see its causal keys
      // so its (unused) row stays finite (Note [Attention kernel]).
      const auto causal_keys = allowed;
      allowed = allowed & token_mask.to(at::kBool).view({batch, 1, 1, total});
      allowed = allowed | (causal_keys & allowed.logical_not().all(-1, true));
    }
  } else {
    causal = past == 0;  // one new token after a cache sees every key
  }

  at::Tensor positions = input.position_ids;
  if (positions.defined()) {
    DSEE_CHECK(positions.dim() == 2 && positions.size(0) == batch && positions.size(1) == seq,
               "position_ids must be [batch, seq] = [{}, {}], got {}", batch, seq, shape_text(positions.sizes()));
    if (prefix_length > 0) positions = positions + prefix_length;
  } else {
    positions = at::arange(past, total, ids.options().dtype(at::kLong)).unsqueeze(0);
  }
  at::Tensor hidden = at::embedding(wte_, ids) + at::embedding(wpe_, positions);
  if (cache && cache->keys.empty()) {
    cache->keys.resize(blocks_.size());
    cache->values.resize(blocks_.size());
  }
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    auto& b = blocks_[i];
    const auto heads = std::int64_t(b.heads.size());
    const auto qkv = b.c_attn.forward(b.ln_1.forward(hidden)).chunk(3, -1);
    const auto q = heads_split(qkv[0], heads);
    auto k = heads_split(qkv[1], heads);
    auto v = heads_split(qkv[2], heads);
    if (prefix.defined()) {
      k = at::cat({prefix[2 * i].unsqueeze(0).expand({batch, -1, -1, -1}), k}, 2);
      v = at::cat({prefix[2 * i + 1].unsqueeze(0).expand({batch, -1, -1, -1}), v}, 2);
    }
    if (cache) {
      if (cache->keys[i].defined()) {
        k = cache_append(cache->keys[i], k, cache->pending_rows);
        v = cache_append(cache->values[i], v, cache->pending_rows);
      }
      cache->keys[i] = k;
      cache->values[i] = v;
    }
    hidden = hidden + b.c_proj.forward(heads_merge(attention(q, k, v, allowed, causal, b.scale)));
    const auto inner = activation_apply(config_.activation, b.c_fc.forward(b.ln_2.forward(hidden)));
    hidden = hidden + b.mlp_c_proj.forward(inner);
  }
  if (cache) cache->pending_rows = at::Tensor();
  ModelOutput out;
  out.last_hidden_state = ln_f_.forward(hidden);
  out.logits = at::linear(out.last_hidden_state, wte_);
  return out;
}

void KvCache::reorder(const at::Tensor& rows) {
  pending_rows = pending_rows.defined() ? pending_rows.index_select(0, rows) : rows;
}

std::vector<std::int64_t>& Gpt2Model::layer_heads(std::int64_t layer) { return blocks_[layer].heads; }

// c_attn holds q, k and v: the same heads go from each third.
void Gpt2Model::layer_keep_heads(std::int64_t layer, const std::vector<std::int64_t>& positions) {
  auto& b = blocks_[layer];
  const auto current = std::int64_t(b.heads.size());
  b.c_attn.keep_rows(head_rows(positions, current, b.head_dim, 3));
  b.c_proj.keep_columns(head_rows(positions, current, b.head_dim, 1));
}

}  // namespace dsee
