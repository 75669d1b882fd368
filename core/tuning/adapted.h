// The matrices a tuning method adapts, found in a model by Hugging Face
// module-name patterns (docs/method.md, 'The update ΔW').
//
// A pattern matches a projection's module name (as PretrainedModel::linears()
// names it, without the family prefix) when the name equals it or ends with
// "." + pattern (PEFT's target_modules rule): "query" matches
// "encoder.layer.3.attention.self.query". A pattern starting with "re:" is a
// regular expression matched against the whole module name. GPT-2's fused
// c_attn holds [q | k | v] rows; "c_attn:q", "c_attn:k", "c_attn:v" select a
// third (plain "c_attn" is the whole fused matrix).
//
// Order: the model's order (layer by layer; within a layer the order of
// linears(), so query before value, and c_attn's thirds q, k, v). This is the
// order of Ω's generator draws (docs/method.md, 'Random draws') and of every
// file that lists them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/linear.h"
#include "core/model/model_config.h"

namespace dsee {

class PretrainedModel;

struct AdaptedMatrix {
  // HF parameter name: "encoder.layer.0.attention.self.query.weight";
  // a GPT-2 third: "h.0.attn.c_attn.weight:q". Ω files use it as the key.
  std::string name;
  // HF module name of the projection ("h.0.attn.c_attn").
  std::string module;
  // The module name with the third appended ("h.0.attn.c_attn:q"; else the
  // module name): the prefix of the update's tensor names ("….lora_A").
  std::string prefix;
  Linear* linear = nullptr;
  std::int64_t row_offset = 0;  // first row of the block in linear->weight
  std::int64_t rows = 0;        // m; the block is rows [row_offset, row_offset + rows)
  std::int64_t layer = -1;      // transformer layer, -1 outside the layers

  std::int64_t cols() const { return linear->in_features(); }
  // The block of the pretrained weight, [rows, in] (a view of linear->weight).
  at::Tensor weight() const;
};

// The transformer layer of a module or tensor name ("encoder.layer.7.…",
// "h.7.…" → 7); -1 outside the layers.
std::int64_t layer_of(const std::string& name);

// {"query", "value"} for BERT/RoBERTa, {"c_attn:q", "c_attn:v"} for GPT-2.
std::vector<std::string> default_target_modules(ModelFamily family);

// The matched matrices in the model's order. Throws dsee::Error when a
// pattern matches nothing (naming the pattern and a few module names), when
// a ":q/:k/:v" pattern names a projection that is not GPT-2's c_attn, or when
// a regular expression does not parse.
std::vector<AdaptedMatrix> adapted_matrices(PretrainedModel& model, const std::vector<std::string>& patterns);

}  // namespace dsee
