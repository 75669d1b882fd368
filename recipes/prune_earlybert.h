// The prune stage's EarlyBERT search (prune.kind = earlybert; docs/tuning.md,
// 'EarlyBERT'; the coefficients and the selection: core/sparsity/
// earlybert.h). From the model the train stage left (EarlyBERT searches
// from the pretrained weights; docs/tuning.md says what differs), coefficients at 1 on every
// head (prune.heads_per_layer > 0) and feed-forward neuron
// (prune.neurons_per_layer > 0) train jointly with the tuning's trainable
// tensors for prune.search_steps optimizer steps of the train stage's loop
// (its batches, optimizer settings and schedule over the search's steps, no
// evaluation, no checkpoints) on loss + prune.l1 · Σ|c|. Then the weights
// are rewound to those the search started from (the lottery-ticket draw:
// only the coefficients' order is kept) and the plan removes the lowest |c|
// of every layer.
//
// Runs on rank 0 over the whole global batches (under data parallelism the
// other ranks wait for masks.h5); the final coefficients are written to
// earlybert.safetensors in the run directory ("earlybert.heads.<layer>",
// "earlybert.neurons.<layer>", fp32).
#pragma once

#include <nlohmann/json.hpp>

#include "core/sparsity/prune_plan.h"
#include "recipes/stages.h"

namespace dsee {

struct EarlyBertSearch {
  PrunePlan plan;
  nlohmann::json record;  // steps, final loss terms, seconds: the prune record's "search"
};

// The search and the plan; the model and the tuning's tensors are as before
// when it returns. dsee::Error for a data-to-text task (its loss is the
// trainer's token-weighted one) or a tuning with an update on a projection
// the coefficients scale.
EarlyBertSearch earlybert_search(Run& run);

// The recipe's checks before a run starts: dsee::Error for a data-to-text
// task and for prune.search_steps < 1.
void earlybert_recipe_check(const Recipe& recipe);

}  // namespace dsee
