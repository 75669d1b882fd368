// Unstructured and structured DSEE pruning; see pruning.h.
#include "core/sparsity/pruning.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "base/enum_names.h"
#include "base/error.h"
#include "base/shape_text.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"
#include "core/tuning/tuning.h"

namespace dsee {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_fused_qkv(const PretrainedModel& model, const std::string& module) {
  return model.config().family == ModelFamily::gpt2 && ends_with(module, "attn.c_attn");
}

// Projections whose rows are head-structured (query, key, value; c_attn).
bool is_attention_input(const PretrainedModel& model, const std::string& module) {
  return is_fused_qkv(model, module) || ends_with(module, "attention.self.query") ||
         ends_with(module, "attention.self.key") || ends_with(module, "attention.self.value");
}

// The prunable projections (docs/method.md, 'Unstructured pruning'): every
// projection inside the layers, plus BERT's pooler and RoBERTa's
// classifier.dense (not the final classifier).
bool is_prunable(const PretrainedModel& model, const std::string& module) {
  if (layer_of(module) >= 0) return true;
  const auto family = model.config().family;
  return (family == ModelFamily::bert && module == "pooler.dense") ||
         (family == ModelFamily::roberta && module == "classifier.dense");
}

bool has_updates(ModelTuning* tuning) { return tuning != nullptr && !tuning->updates().empty(); }

// A pool block with the update on its rows (null: ΔW = 0).
struct UpdatedBlock {
  PoolBlock block;
  SparseUpdate* update = nullptr;
};

// The P_adapt blocks: the tuning's updates, or the default targets without.
std::vector<UpdatedBlock> adapt_blocks(PretrainedModel& model, ModelTuning* tuning) {
  std::vector<UpdatedBlock> out;
  if (has_updates(tuning)) {
    for (auto* update : tuning->updates()) {
      const auto& m = update->matrix;
      out.push_back({{m.module, m.linear, m.row_offset, m.rows}, update});
    }
    return out;
  }
  for (const auto& m : adapted_matrices(model, default_target_modules(model.config().family)))
    out.push_back({{m.module, m.linear, m.row_offset, m.rows}, nullptr});
  return out;
}

// The entries' scores of `blocks` under `scoring` (pruning.h, 'Criteria'):
// [rows, in] each, >= 0; delta and merged on the model's device, random on
// the CPU. `unscaled_delta`: delta scores B·A + P_Ω(S) (the head scores).
std::vector<at::Tensor> entry_scores(const std::vector<UpdatedBlock>& blocks, const PruneScoring& scoring,
                                     bool unscaled_delta) {
  std::vector<at::Tensor> out;
  if (scoring.criterion == PruneCriterion::random) {
    std::int64_t total = 0;
    for (const auto& b : blocks) total += b.block.rows * b.block.linear->in_features();
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(scoring.seed);
    generator.set_current_seed(scoring.seed);
    const auto draw = at::rand({total}, generator, at::TensorOptions().dtype(at::kFloat));
    std::int64_t at_entry = 0;
    for (const auto& b : blocks) {
      const auto n = b.block.rows * b.block.linear->in_features();
      out.push_back(draw.narrow(0, at_entry, n).view({b.block.rows, b.block.linear->in_features()}));
      at_entry += n;
    }
    return out;
  }
  for (const auto& b : blocks) {
    const auto weight = b.block.linear->weight.detach().narrow(0, b.block.row_offset, b.block.rows);
    if (scoring.criterion == PruneCriterion::merged)
      out.push_back(b.update ? (weight + b.update->delta_weight().detach()).abs() : weight.abs());
    else if (b.update)
      out.push_back((unscaled_delta ? b.update->unscaled() : b.update->delta_weight()).detach().abs());
    else
      out.push_back(at::zeros({b.block.rows, weight.size(1)}, at::TensorOptions().dtype(at::kFloat)));
  }
  return out;
}

constexpr EnumName<PruneCriterion> kCriteria[] = {
    {PruneCriterion::delta, "delta"}, {PruneCriterion::random, "random"}, {PruneCriterion::merged, "merged"}};

// Rows of `module` in [offset, offset + rows) overlap a block of `blocks`.
bool overlaps(const std::vector<PoolBlock>& blocks, const std::string& module, std::int64_t offset, std::int64_t rows) {
  return std::any_of(blocks.begin(), blocks.end(), [&](const PoolBlock& b) {
    return b.module == module && b.row_offset < offset + rows && offset < b.row_offset + b.rows;
  });
}

// The plan of pool blocks and their keep-masks: one mask per projection (in
// linears() order) that loses an entry, the blocks' rows combined.
PrunePlan plan_of_blocks(PretrainedModel& model, const std::vector<PoolBlock>& blocks,
                         const std::vector<at::Tensor>& keep) {
  PrunePlan plan;
  for (auto& [module, linear] : model.linears()) {
    at::Tensor mask;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      if (blocks[i].module != module) continue;
      if (!mask.defined()) mask = at::ones({linear->out_features(), linear->in_features()}, at::kBool);
      mask.narrow(0, blocks[i].row_offset, blocks[i].rows).copy_(keep[i]);
    }
    if (mask.defined() && !mask.all().item<bool>()) plan.masks.push_back({module, mask});
  }
  return plan;
}

}  // namespace

PruneCriterion prune_criterion_from_name(const std::string& name) {
  if (const auto criterion = enum_from_name(kCriteria, name)) return *criterion;
  throw Error(fmt::format("unknown pruning criterion '{}': use 'delta', 'random' or 'merged'", name));
}

const char* prune_criterion_name(PruneCriterion criterion) { return enum_name(kCriteria, criterion); }

std::vector<PoolBlock> pool_adapt(PretrainedModel& model, ModelTuning* tuning) {
  std::vector<PoolBlock> out;
  for (auto& b : adapt_blocks(model, tuning)) out.push_back(b.block);
  return out;
}

std::vector<PoolBlock> pool_rest(PretrainedModel& model, ModelTuning* tuning) {
  std::vector<PoolBlock> adapt;
  if (has_updates(tuning))
    for (auto* update : tuning->updates())
      adapt.push_back({update->matrix.module, update->matrix.linear, update->matrix.row_offset, update->matrix.rows});
  else
    adapt = pool_adapt(model, nullptr);
  std::vector<PoolBlock> out;
  for (auto& [module, linear] : model.linears()) {
    if (!is_prunable(model, module)) continue;
    const int parts = is_fused_qkv(model, module) ? 3 : 1;
    const auto rows = linear->out_features() / parts;
    for (int i = 0; i < parts; ++i)
      if (!overlaps(adapt, module, i * rows, rows)) out.push_back({module, linear, i * rows, rows});
  }
  return out;
}

// Note [Exact pool pruning]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// The method removes exactly n = round(p·N) entries per pool, the smallest
// scores first, ties broken by the lower flat index of the concatenated pool
// (pool order = model order, row-major within a block). A full stable sort of a
// BERT-base P_rest (85M entries) costs gigabytes, so: t = the n-th smallest
// score (kthvalue); every score < t goes; of the scores == t, the first
// (n - #below) in flat order go (a cumulative count over the equality mask).
// That is the same set a stable ascending sort would cut.
// round() is half away from zero (std::llround): p·N = 2.5 removes 3.
std::vector<at::Tensor> pool_keep_masks(const std::vector<at::Tensor>& scores, double fraction) {
  DSEE_CHECK(fraction >= 0.0 && fraction <= 1.0, "pruning fraction {} is outside [0, 1]", fraction);
  std::int64_t total = 0;
  for (const auto& s : scores) total += s.numel();
  return pool_keep_masks_count(scores, std::llround(fraction * double(total)));
}

std::vector<at::Tensor> pool_keep_masks_count(const std::vector<at::Tensor>& scores, std::int64_t remove_count) {
  std::vector<at::Tensor> flat;
  for (const auto& s : scores) flat.push_back(s.detach().reshape({-1}).cpu());
  std::vector<at::Tensor> keep;
  if (flat.empty()) return keep;
  auto all = at::cat(flat);
  if (all.scalar_type() != at::kDouble) all = all.to(at::kFloat);
  const auto total = all.numel();
  DSEE_CHECK(remove_count >= 0 && remove_count <= total, "cannot remove {} entries of a pool of {}", remove_count,
             total);
  DSEE_CHECK(!all.isnan().any().item<bool>(), "pruning scores hold NaN; the update diverged");
  auto removed = at::zeros({total}, at::kBool);
  if (remove_count == total) {
    removed.fill_(true);
  } else if (remove_count > 0) {
    const auto threshold = std::get<0>(at::kthvalue(all, remove_count));
    removed = all.lt(threshold);
    const auto below = removed.sum().item<std::int64_t>();
    const auto tied = all.eq(threshold);
    removed |= tied & tied.cumsum(0).le(remove_count - below);
  }
  DSEE_ASSERT(removed.sum().item<std::int64_t>() == remove_count, "pool pruning removed the wrong count");
  std::int64_t at_entry = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const auto n = flat[i].numel();
    keep.push_back(removed.narrow(0, at_entry, n).logical_not().reshape(scores[i].sizes()));
    at_entry += n;
  }
  return keep;
}

PrunePlan unstructured_plan(PretrainedModel& model, ModelTuning* tuning, const UnstructuredLevels& levels,
                            const PruneScoring& scoring) {
  std::vector<PoolBlock> blocks;
  std::vector<at::Tensor> keep;
  if (levels.p_adapt > 0.0) {
    const auto adapt = adapt_blocks(model, tuning);
    for (const auto& b : adapt) blocks.push_back(b.block);
    for (auto& k : pool_keep_masks(entry_scores(adapt, scoring, /*unscaled_delta=*/false), levels.p_adapt))
      keep.push_back(k);
  }
  if (levels.p_rest > 0.0) {
    std::vector<at::Tensor> scores;
    for (auto& block : pool_rest(model, tuning)) {
      blocks.push_back(block);
      scores.push_back(block.linear->weight.detach().narrow(0, block.row_offset, block.rows).abs().cpu());
    }
    for (auto& k : pool_keep_masks(scores, levels.p_rest)) keep.push_back(k);
  }
  return plan_of_blocks(model, blocks, keep);
}

std::vector<at::Tensor> head_scores(PretrainedModel& model, ModelTuning* tuning, const PruneScoring& scoring) {
  const auto& config = model.config();
  const auto head_dim = config.head_dim();
  std::vector<at::Tensor> scores;
  for (std::int64_t layer = 0; layer < config.num_layers; ++layer)
    scores.push_back(at::zeros({std::int64_t(config.kept_heads(layer).size())}, at::kDouble));
  // The q/k/v blocks whose entries are scored: the tuning's updates on them,
  // or query and value of every layer without a tuning (there ΔW = 0, and
  // delta falls back to |W|, which is merged's score).
  std::vector<UpdatedBlock> blocks;
  auto entry_scoring = scoring;
  if (tuning == nullptr) {
    for (auto& [module, linear] : model.linears()) {
      if (is_fused_qkv(model, module)) {
        const auto third = linear->out_features() / 3;
        blocks.push_back({{module, linear, 0, third}, nullptr});
        blocks.push_back({{module, linear, 2 * third, third}, nullptr});
      } else if (ends_with(module, "attention.self.query") || ends_with(module, "attention.self.value")) {
        blocks.push_back({{module, linear, 0, linear->out_features()}, nullptr});
      }
    }
    if (entry_scoring.criterion == PruneCriterion::delta) entry_scoring.criterion = PruneCriterion::merged;
  } else {
    for (auto* update : tuning->updates())
      if (is_attention_input(model, update->matrix.module))
        blocks.push_back(
            {{update->matrix.module, update->matrix.linear, update->matrix.row_offset, update->matrix.rows}, update});
    DSEE_CHECK(!blocks.empty(),
               "head scores come from the update of the attention's query/value, but this {} tuning adapts no "
               "query, key or value projection",
               tuning_method_name(tuning->options().method));
  }
  // Σ_j score_ij per row of a block (fp32) → Σ per head of the layer (fp64).
  const auto entries = entry_scores(blocks, entry_scoring, /*unscaled_delta=*/true);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    auto& layer_scores = scores[layer_of(blocks[i].block.module)];
    const auto per_row = entries[i].sum(1).to(at::kDouble).cpu();
    layer_scores += per_row.reshape({-1, layer_scores.size(0), head_dim}).sum(at::IntArrayRef{0, 2});
  }
  return scores;
}

PrunePlan structured_plan(PretrainedModel& model, ModelTuning* tuning, std::int64_t heads_per_layer,
                          const PruneScoring& scoring) {
  const auto& config = model.config();
  DSEE_CHECK(heads_per_layer >= 0, "heads to remove per layer must be >= 0, got {}", heads_per_layer);
  PrunePlan plan;
  if (heads_per_layer == 0) return plan;
  const auto scores = head_scores(model, tuning, scoring);
  for (std::int64_t layer = 0; layer < config.num_layers; ++layer) {
    const auto kept = config.kept_heads(layer);
    DSEE_CHECK(heads_per_layer < std::int64_t(kept.size()),
               "cannot remove {} heads from layer {}: it has {} (at least one must stay)", heads_per_layer, layer,
               kept.size());
    // kept is ascending in original id, so a stable sort by score puts the
    // lower id first among equal scores.
    const auto order = std::get<1>(at::sort(scores[layer], /*stable=*/true, /*dim=*/0, /*descending=*/false));
    std::vector<std::int64_t> removed;
    for (std::int64_t i = 0; i < heads_per_layer; ++i) removed.push_back(kept[order[i].item<std::int64_t>()]);
    std::sort(removed.begin(), removed.end());
    plan.heads[layer] = removed;
  }
  return plan;
}

void prune_plan_apply(PretrainedModel& model, const PrunePlan& plan) {
  if (!plan.heads.empty()) model.prune_heads(plan.heads);
  model.prune_neurons(plan.neurons);
  for (const auto& m : plan.masks) {
    Linear& linear = model.linear(m.module);
    DSEE_CHECK(m.mask.dim() == 2 && m.mask.size(0) == linear.out_features() && m.mask.size(1) == linear.in_features(),
               "prune plan: the mask of {} is {}, but the projection is [{}, {}] (a plan for another model, or "
               "masks made before head removal?)",
               m.module, shape_text(m.mask.sizes()), linear.out_features(), linear.in_features());
    linear.mask = m.mask.to(linear.weight.device(), linear.weight.scalar_type());
  }
}

// Note [Iterative magnitude pruning]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Round r of R leaves k_r = round(N·(1 − (1 − s)^(r/R))) entries of the pool
// removed: each round removes about the same fraction p = 1 − (1 − s)^(1/R)
// of the entries still there, and the last round lands on round(s·N), the
// count a one-shot pruning to s removes. The entries a mask already zeroes
// score -1, below every |W|, so they are removed again first and a round only
// adds to the earlier rounds' removals (k_r never falls: round() is monotone).
std::int64_t imp_removed_count(std::int64_t pool_size, double sparsity, std::int64_t rounds, std::int64_t round) {
  DSEE_CHECK(sparsity >= 0.0 && sparsity < 1.0, "IMP sparsity {} is outside [0, 1)", sparsity);
  DSEE_CHECK(rounds >= 1 && round >= 1 && round <= rounds, "IMP round {} of {} is out of range", round, rounds);
  if (round == rounds) return std::llround(sparsity * double(pool_size));
  const double kept = std::pow(1.0 - sparsity, double(round) / double(rounds));
  return std::llround((1.0 - kept) * double(pool_size));
}

std::vector<PoolBlock> pool_magnitude(PretrainedModel& model) {
  std::vector<PoolBlock> out;
  for (auto& [module, linear] : model.linears())
    if (is_prunable(model, module)) out.push_back({module, linear, 0, linear->out_features()});
  return out;
}

PrunePlan magnitude_plan(PretrainedModel& model, std::int64_t remove_count) {
  const auto blocks = pool_magnitude(model);
  std::vector<at::Tensor> scores;
  for (const auto& block : blocks) {
    auto score = block.linear->weight.detach().abs().to(at::kFloat).cpu();
    if (block.linear->mask.defined()) score.masked_fill_(block.linear->mask.detach().cpu().eq(0), -1.0);
    scores.push_back(score);
  }
  return plan_of_blocks(model, blocks, pool_keep_masks_count(scores, remove_count));
}

}  // namespace dsee
