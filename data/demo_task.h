// The built-in demo's synthetic world (README.md, 'The demo'): a small
// "pretrained" BERT-style classifier whose projection weights have the
// structure DSEE assumes — low rank plus a few large outliers plus noise —
// and random token sequences for it to classify. Everything is drawn from
// one CPU generator seeded with DemoSpec::seed, so the demo is the same on
// every machine and every run.
//
// What is planted where (see Note [The demo's planted structure] in
// demo_task.cpp for why):
//   projection W [out, in]   σ_lr·U·Vᵀ (rank `weight_rank`) + σ_noise·N
//                            + ±outlier_scale added at `outliers` distinct
//                            uniform positions
//   embeddings, task head    N(0, 0.02²) / N(0, 0.2²); LayerNorms 1 and 0
// The teacher (model + planted update on the adapted matrices) and the labels
// come from the recipe stage that runs the model (recipes/), which needs
// core; this file only draws tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/named_tensor.h"

namespace dsee {

struct DemoSpec {
  std::int64_t vocab_size = 256;
  std::int64_t hidden_size = 64;
  std::int64_t num_layers = 2;
  std::int64_t num_heads = 8;
  std::int64_t intermediate_size = 128;
  std::int64_t max_positions = 32;
  std::int64_t seq_len = 16;     // tokens per sequence, [CLS] included
  std::int64_t weight_rank = 4;  // rank of each projection's low-rank part
  std::int64_t outliers = 16;    // large entries per projection
  double lowrank_std = 0.08;     // entry std of the low-rank part
  double noise_std = 0.002;
  double outlier_scale = 1.0;
  std::uint64_t seed = 20211014;
};

// The pretrained BertForSequenceClassification tensors (2 labels) by HF name
// ("bert.embeddings.word_embeddings.weight", ..., "classifier.bias"), in the
// order transformers lists them; projections [out, in] as torch.nn.Linear.
NamedTensors demo_pretrained_tensors(const DemoSpec& spec);

// One projection's weight as described above, from `generator`.
at::Tensor demo_projection_weight(std::int64_t out, std::int64_t in, const DemoSpec& spec, at::Generator& generator);

// `count` sequences [count, seq_len] int64: token 0 is [CLS] (id 1), the rest
// uniform over [4, vocab_size) (ids 0–3 are [PAD], [CLS], [SEP], [MASK]).
// `stream` selects an independent sequence set (0 train, 1 dev, ...).
at::Tensor demo_token_sequences(const DemoSpec& spec, std::int64_t count, std::uint64_t stream);

}  // namespace dsee
