// GPT-2: a pre-norm causal decoder with a tied LM head (GPT2LMHeadModel).
//
//   embeddings  wte + wpe at positions past..past+seq-1 (right padding keeps
//               the positions of the real tokens; HF does the same), or at
//               the input's position_ids (left padding in generation).
//   block       ln_1 → attn.c_attn ([3·width, hidden], rows q|k|v) → causal
//               attention (plus the padding mask) → attn.c_proj, residual;
//               ln_2 → mlp.c_fc → gelu_new → mlp.c_proj, residual.
//   head        ln_f, then logits = hidden · wteᵀ (tied; lm_head.weight is
//               never a separate tensor).
// Conv1D weights are kept [out, in] (Note [The linear seam] in linear.h).
// With a KvCache the forward appends this step's keys/values per layer and
// attends over past + new keys, so decoding token by token gives the logits
// of the full forward (Gpt2Cache.IncrementalDecodingEqualsFullForward in
// tests/unit/test_models.cpp). The cache grows by concatenation; beam
// search reorders its rows with KvCache::reorder, which the next forward
// applies while appending (index_select into the grown tensor: one copy per
// step). O(length²) copies over a generation, fine for E2E-length outputs
// (core/train/generation.h).
#pragma once

#include "core/model/pretrained_model.h"
#include "core/model/transformer_layers.h"

namespace dsee {

struct Gpt2Block {
  LayerNorm ln_1;
  Linear c_attn;  // attn.c_attn: [3 * heads * head_dim, hidden]
  Linear c_proj;  // attn.c_proj: [hidden, heads * head_dim]
  LayerNorm ln_2;
  Linear c_fc;                      // mlp.c_fc: [inner, hidden]
  Linear mlp_c_proj;                // mlp.c_proj: [hidden, inner]
  std::vector<std::int64_t> heads;  // original ids of the heads kept
  std::int64_t head_dim = 0;
  double scale = 1.0;
};

class Gpt2Model final : public PretrainedModel {
 public:
  Gpt2Model(ModelConfig config, at::ScalarType dtype, c10::Device device);

  ModelOutput forward(const ModelInput& input) override;
  std::vector<TensorSlot> tensor_slots() override;
  std::vector<std::pair<std::string, Linear*>> linears() override;
  bool has_task_head() const override { return true; }

 private:
  std::vector<std::int64_t>& layer_heads(std::int64_t layer) override;
  void layer_keep_heads(std::int64_t layer, const std::vector<std::int64_t>& positions) override;
  at::Tensor wte_, wpe_;  // [vocab, hidden], [positions, hidden]
  std::vector<Gpt2Block> blocks_;
  LayerNorm ln_f_;
};

}  // namespace dsee
