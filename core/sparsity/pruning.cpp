// Unstructured and structured DSEE pruning; see pruning.h.
#include "core/sparsity/pruning.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <regex>

#include "base/error.h"
#include "base/shape_text.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"
#include "core/tuning/tuning.h"

namespace dsee {
namespace {

// "encoder.layer.7.…" / "h.7.…" → 7; -1 outside the transformer layers.
std::int64_t layer_of(const std::string& module) {
  static const std::regex layer_re(R"(^(?:encoder\.layer|h)\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(module, m, layer_re) ? std::stoll(m[1].str()) : -1;
}

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

// The P_adapt blocks with their scores |ΔW| (zeros without updates).
struct ScoredBlock {
  PoolBlock block;
  at::Tensor score;  // [rows, in] CPU
};

std::vector<ScoredBlock> pool_adapt_scored(PretrainedModel& model, ModelTuning* tuning) {
  std::vector<ScoredBlock> out;
  if (has_updates(tuning)) {
    for (auto* update : tuning->updates()) {
      const auto& m = update->matrix;
      out.push_back({{m.module, m.linear, m.row_offset, m.rows}, update->delta_weight().detach().abs().cpu()});
    }
    return out;
  }
  for (const auto& m : adapted_matrices(model, default_target_modules(model.config().family)))
    out.push_back({{m.module, m.linear, m.row_offset, m.rows},
                   at::zeros({m.rows, m.cols()}, at::TensorOptions().dtype(at::kFloat))});
  return out;
}

// Rows of `module` in [offset, offset + rows) overlap a block of `blocks`.
bool overlaps(const std::vector<PoolBlock>& blocks, const std::string& module, std::int64_t offset, std::int64_t rows) {
  return std::any_of(blocks.begin(), blocks.end(), [&](const PoolBlock& b) {
    return b.module == module && b.row_offset < offset + rows && offset < b.row_offset + b.rows;
  });
}

}  // namespace

std::vector<PoolBlock> pool_adapt(PretrainedModel& model, ModelTuning* tuning) {
  std::vector<PoolBlock> out;
  for (auto& scored : pool_adapt_scored(model, tuning)) out.push_back(scored.block);
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
  std::vector<at::Tensor> flat;
  for (const auto& s : scores) flat.push_back(s.detach().reshape({-1}).cpu());
  std::vector<at::Tensor> keep;
  if (flat.empty()) return keep;
  auto all = at::cat(flat);
  if (all.scalar_type() != at::kDouble) all = all.to(at::kFloat);
  const auto total = all.numel();
  const auto remove_count = std::llround(fraction * double(total));
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

PrunePlan unstructured_plan(PretrainedModel& model, ModelTuning* tuning, const UnstructuredLevels& levels) {
  std::vector<PoolBlock> blocks;
  std::vector<at::Tensor> keep;
  if (levels.p_adapt > 0.0) {
    std::vector<at::Tensor> scores;
    for (auto& scored : pool_adapt_scored(model, tuning)) {
      blocks.push_back(scored.block);
      scores.push_back(scored.score);
    }
    for (auto& k : pool_keep_masks(scores, levels.p_adapt)) keep.push_back(k);
  }
  if (levels.p_rest > 0.0) {
    std::vector<at::Tensor> scores;
    for (auto& block : pool_rest(model, tuning)) {
      blocks.push_back(block);
      scores.push_back(block.linear->weight.detach().narrow(0, block.row_offset, block.rows).abs().cpu());
    }
    for (auto& k : pool_keep_masks(scores, levels.p_rest)) keep.push_back(k);
  }
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

std::vector<at::Tensor> head_scores(PretrainedModel& model, ModelTuning* tuning) {
  const auto& config = model.config();
  const auto head_dim = config.head_dim();
  std::vector<at::Tensor> scores;
  for (std::int64_t layer = 0; layer < config.num_layers; ++layer)
    scores.push_back(at::zeros({std::int64_t(config.kept_heads(layer).size())}, at::kDouble));
  // Σ_j |X_ij| per row of a head-structured block → Σ per head of the layer.
  const auto add_rows = [&](std::int64_t layer, const at::Tensor& block) {
    const auto per_row = block.detach().abs().sum(1).to(at::kDouble).cpu();
    scores[layer] += per_row.reshape({-1, scores[layer].size(0), head_dim}).sum(at::IntArrayRef{0, 2});
  };
  if (tuning == nullptr) {
    for (auto& [module, linear] : model.linears()) {
      const auto layer = layer_of(module);
      if (is_fused_qkv(model, module)) {
        const auto third = linear->out_features() / 3;
        add_rows(layer, linear->weight.narrow(0, 0, third));
        add_rows(layer, linear->weight.narrow(0, 2 * third, third));
      } else if (ends_with(module, "attention.self.query") || ends_with(module, "attention.self.value")) {
        add_rows(layer, linear->weight);
      }
    }
    return scores;
  }
  bool any = false;
  for (auto* update : tuning->updates()) {
    if (!is_attention_input(model, update->matrix.module)) continue;
    add_rows(update->matrix.layer, update->unscaled());
    any = true;
  }
  DSEE_CHECK(any,
             "head scores come from the update of the attention's query/value, but this {} tuning adapts no "
             "query, key or value projection",
             tuning_method_name(tuning->options().method));
  return scores;
}

PrunePlan structured_plan(PretrainedModel& model, ModelTuning* tuning, std::int64_t heads_per_layer) {
  const auto& config = model.config();
  DSEE_CHECK(heads_per_layer >= 0, "heads to remove per layer must be >= 0, got {}", heads_per_layer);
  PrunePlan plan;
  if (heads_per_layer == 0) return plan;
  const auto scores = head_scores(model, tuning);
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
  for (const auto& m : plan.masks) {
    Linear& linear = model.linear(m.module);
    DSEE_CHECK(m.mask.dim() == 2 && m.mask.size(0) == linear.out_features() && m.mask.size(1) == linear.in_features(),
               "prune plan: the mask of {} is {}, but the projection is [{}, {}] (a plan for another model, or "
               "masks made before head removal?)",
               m.module, shape_text(m.mask.sizes()), linear.out_features(), linear.in_features());
    linear.mask = m.mask.to(linear.weight.device(), linear.weight.scalar_type());
  }
}

}  // namespace dsee
