// DSEE's pruning (docs/method.md, 'Unstructured pruning' and 'Head pruning'):
// unstructured masks from two global pools and structured removal of whole
// attention heads, both as a PrunePlan (prune_plan.h) that prune_plan_apply
// puts on a model.
//
// Unstructured. Pool P_adapt is every adapted matrix, scored by |ΔW| (or by
// another PruneCriterion, below); pool
// P_rest is every other encoder projection of the method's list (BERT/RoBERTa:
// query, key, value, attention.output.dense, intermediate.dense, output.dense,
// plus BERT's pooler.dense / RoBERTa's classifier.dense; GPT-2: the thirds of
// attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), less the adapted blocks,
// scored by |W|. Each pool loses exactly round(p · N) entries under one global
// threshold (Note [Exact pool pruning] in pruning.cpp). Never pruned:
// embeddings, layer norms, biases, A, B, S and the final classifier / LM head.
//
// Structured. Each head of layer ℓ scores Σ over its rows of the unscaled
// update |B·A + P_Ω(S)| of the adapted query and value (any adapted q/k/v
// block counts); the k lowest of every layer are removed. The other criteria
// score heads the same way: Σ over the head's rows of the entries' scores.
//
// Criteria (prune.criterion; the DSEE paper's Table 7 ablation). P_rest is
// always scored by |W|; P_adapt's entries (and the entries heads sum) by
//   delta   |ΔW|, ΔW = s·(B·A + P_Ω(S)) (heads: the unscaled B·A + P_Ω(S);
//           s > 0 is shared, so the order is the same)
//   merged  |W + ΔW|, the merged weight (W in fp32)
//   random  u ~ U[0, 1): one at::rand({N}) in fp32 from a fresh CPU generator
//           seeded PruneScoring::seed, N = Σ numel of the scored blocks, cut
//           in block order, each block [rows, in] row-major. Unstructured:
//           the blocks are P_adapt in pool order (the tuning's updates());
//           heads: the updates of q/k/v projections in the same order (without
//           a tuning: query then value of every layer). Python reproduces it:
//           torch.rand(N, generator=torch.Generator().manual_seed(seed)).
//
// Without a tuning (a model folder, no run) or with one that has no updates
// (full fine-tuning) both plans fall back to the weights: P_adapt is the
// default targets (query, value) with ΔW = 0, so delta's cuts fall on the
// lowest flat indices and merged scores |W|; heads (no tuning only) are
// scored by Σ |W| of their query and value rows under delta and merged. A
// run's plan comes from its update.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/sparsity/prune_plan.h"

namespace dsee {

class PretrainedModel;
class ModelTuning;
struct Linear;

// Rows [row_offset, row_offset + rows) of one projection: a pool member.
struct PoolBlock {
  std::string module;  // HF module name ("h.0.attn.c_attn")
  Linear* linear = nullptr;
  std::int64_t row_offset = 0;
  std::int64_t rows = 0;
};

// The two pools in the model's order (linears() order; within GPT-2's
// c_attn the thirds q, k, v). `tuning` may be null (then P_adapt is the
// default targets); full fine-tuning has no updates and is treated the same.
std::vector<PoolBlock> pool_adapt(PretrainedModel& model, ModelTuning* tuning);
std::vector<PoolBlock> pool_rest(PretrainedModel& model, ModelTuning* tuning);

// Keep-masks (bool, the shapes of `scores`) of one pool: exactly
// round(fraction · N) entries (N = Σ numel) are removed, the smallest scores
// first, ties to the lower flat index of the concatenation in the given order.
std::vector<at::Tensor> pool_keep_masks(const std::vector<at::Tensor>& scores, double fraction);
// The same with the count given: exactly `remove_count` entries (0..N) go.
std::vector<at::Tensor> pool_keep_masks_count(const std::vector<at::Tensor>& scores, std::int64_t remove_count);

enum class PruneCriterion { delta, random, merged };
// "delta" / "random" / "merged"; dsee::Error naming the accepted names.
PruneCriterion prune_criterion_from_name(const std::string& name);
const char* prune_criterion_name(PruneCriterion criterion);

// How P_adapt's entries and the heads are scored (see above).
struct PruneScoring {
  PruneCriterion criterion = PruneCriterion::delta;
  std::uint64_t seed = 0;  // random: the generator's seed (the recipe's run.seed)
};

struct UnstructuredLevels {
  double p_adapt = 0.0;  // fraction of P_adapt removed, [0, 1]
  double p_rest = 0.0;   // fraction of P_rest removed, [0, 1]
};

// The masks (in linears() order, only projections that lose an entry; a
// GPT-2 c_attn mask combines its thirds). Masks are [out, in] bool, CPU, at
// the model's current shapes.
PrunePlan unstructured_plan(PretrainedModel& model, ModelTuning* tuning, const UnstructuredLevels& levels,
                            const PruneScoring& scoring = {});

// Per layer, the score of each head the layer has now (in the order of
// config().kept_heads(layer)), fp64 CPU [heads]: per q/k/v block, the
// entries' scores summed per row in fp32, then per head in fp64. From the
// tuning's updates, or (delta, merged) from |W| of query and value when
// `tuning` is null; dsee::Error when a tuning has no update on the
// attention's q/k/v (full fine-tuning).
std::vector<at::Tensor> head_scores(PretrainedModel& model, ModelTuning* tuning, const PruneScoring& scoring = {});

// Removes the `heads_per_layer` lowest-scoring heads of every layer (ties:
// the lower original head id goes first): plan.heads holds original ids.
PrunePlan structured_plan(PretrainedModel& model, ModelTuning* tuning, std::int64_t heads_per_layer,
                          const PruneScoring& scoring = {});

// Applies a plan: heads first (PretrainedModel::prune_heads; an attached
// tuning shrinks through LinearTuning::keep_rows/keep_columns), the
// feed-forward neurons (PretrainedModel::prune_neurons), then the
// masks (Linear::mask in the model's dtype and device), whose shapes are the
// shapes after head removal. dsee::Error names a module that does not exist
// or a mask of the wrong shape.
void prune_plan_apply(PretrainedModel& model, const PrunePlan& plan);

// Iterative magnitude pruning (prune.kind = imp; docs/tuning.md, 'BERT
// tickets (IMP)'; Note [Iterative magnitude pruning] in pruning.cpp).
// The pool: every prunable projection whole (the projections of P_adapt and
// P_rest above: BERT/RoBERTa query, key, value, attention.output.dense,
// intermediate.dense, output.dense, BERT's pooler.dense / RoBERTa's
// classifier.dense; GPT-2 attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), in
// linears() order, rows [0, out).
std::vector<PoolBlock> pool_magnitude(PretrainedModel& model);
// Entries of a pool of `pool_size` removed once round `round` (1..rounds) of
// `rounds` is done: round(N·(1 − (1 − s)^(r/R))), the last exactly
// round(s·N). dsee::Error for s outside [0, 1) or a round out of range.
std::int64_t imp_removed_count(std::int64_t pool_size, double sparsity, std::int64_t rounds, std::int64_t round);
// The masks of pool_magnitude that remove exactly `remove_count` entries by
// global |W| of the current weights (fp32), the smallest first, ties to the
// lower flat index of the pool (blocks row-major, [out, in]); entries the
// projection's current mask zeroes go first (they score -1). Same layout as
// unstructured_plan's.
PrunePlan magnitude_plan(PretrainedModel& model, std::int64_t remove_count);

}  // namespace dsee
