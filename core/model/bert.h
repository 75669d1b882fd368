// BERT and RoBERTa: one post-norm transformer encoder, two embeddings and two
// classification heads.
//
//   embeddings  word + position + token type, LayerNorm. BERT positions are
//               0..seq-1; RoBERTa's are cumsum(input_ids != pad) + pad for
//               real tokens and pad for padding (HF's rule, so a sequence
//               holds at most max_positions - pad - 1 tokens).
//   layer       self-attention (query/key/value, attention.output.dense +
//               LayerNorm on the residual), intermediate.dense + activation,
//               output.dense + LayerNorm on the residual.
//   head        BERT: pooler (first token, dense, tanh) → classifier.
//               RoBERTa: first token → classifier.dense → tanh →
//               classifier.out_proj (RobertaClassificationHead; no pooler).
// With num_labels == 1 the logits are the regression output. Dropout is the
// identity (dsee evaluates here; training adds its own dropout).
#pragma once

#include <optional>

#include "core/model/pretrained_model.h"
#include "core/model/transformer_layers.h"

namespace dsee {

struct EncoderAttention {
  Linear query, key, value;         // attention.self.{query,key,value}: [heads * head_dim, hidden]
  Linear output;                    // attention.output.dense: [hidden, heads * head_dim]
  LayerNorm output_norm;            // attention.output.LayerNorm
  std::vector<std::int64_t> heads;  // original ids of the heads kept
  std::int64_t head_dim = 0;
};

struct EncoderLayer {
  EncoderAttention attention;
  Linear intermediate;    // intermediate.dense
  Linear output;          // output.dense
  LayerNorm output_norm;  // output.LayerNorm
};

class EncoderModel final : public PretrainedModel {
 public:
  // Allocates every tensor (uninitialised) in the shapes `config` implies.
  EncoderModel(ModelConfig config, bool classification_head, at::ScalarType dtype, c10::Device device);

  ModelOutput forward(const ModelInput& input) override;
  std::vector<TensorSlot> tensor_slots() override;
  std::vector<std::pair<std::string, Linear*>> linears() override;
  bool has_task_head() const override { return classification_head_; }

  // Position ids for input_ids [batch, seq] (see the header comment) after
  // `past` positions (an AttentionPrefix's L): BERT past..past+seq-1, RoBERTa
  // (cumsum(real) + past)·real + pad.
  at::Tensor position_ids(const at::Tensor& input_ids, std::int64_t past = 0) const;

 private:
  std::vector<std::int64_t>& layer_heads(std::int64_t layer) override;
  void layer_keep_heads(std::int64_t layer, const std::vector<std::int64_t>& positions) override;
  bool classification_head_;
  at::Tensor word_embeddings_, position_embeddings_, token_type_embeddings_;
  LayerNorm embeddings_norm_;
  std::vector<EncoderLayer> layers_;
  std::optional<Linear> pooler_;  // BERT only
  Linear classifier_;             // BERT: classifier; RoBERTa: classifier.out_proj
  Linear classifier_dense_;       // RoBERTa: classifier.dense
};

}  // namespace dsee
