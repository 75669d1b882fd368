// The prune stage (prune.kind = unstructured | heads; imp: stage_prune_imp.cpp): the pruning plan from
// the trained update (pools or head scores under prune.criterion: |ΔW|,
// |W + ΔW| or random; core/sparsity/pruning.h) →
// masks.h5, applied to the model. Rank 0 computes and writes the plan, and
// every rank takes it from masks.h5 (checked by fingerprint), whether it was
// computed now or by an earlier run.
// prune.kind = earlybert: the plan from EarlyBERT's coefficient search (prune_earlybert.h).
#include "core/sparsity/prune_plan.h"
#include "core/sparsity/pruning.h"
#include "recipes/prune_earlybert.h"
#include "recipes/stages.h"

namespace dsee {

void prune_plan_load(Run& run) {
  read_on_every_rank(run.ranks, run.dir.masks(), "reading masks.h5",
                     [&] { run.prune_plan = prune_plan_read(run.dir.masks()); });
  prune_plan_apply(*run.model, run.prune_plan);
}

void stage_prune(Run& run) {
  const auto& prune = run.recipe.prune;
  if (prune.kind == PruneKind::none) return;
  if (prune.kind == PruneKind::imp) return stage_prune_imp(run);
  if (stage_finished(run, Stage::prune)) return prune_plan_load(run);
  stage_required(run, Stage::prune);
  const auto start = StageClock::now();
  // prune.criterion's random scores come from run.seed (pruning.h, 'Criteria').
  const PruneScoring scoring{prune.criterion, std::uint64_t(run.recipe.run.seed)};
  nlohmann::json search;  // earlybert: the search's record (rank 0; prune_earlybert.h)
  root_writes(run.ranks, "computing the pruning plan", [&] {
    if (prune.kind == PruneKind::earlybert) {
      auto result = earlybert_search(run);
      search = std::move(result.record);
      return prune_plan_write(run.dir.masks(), result.plan);
    }
    prune_plan_write(run.dir.masks(),
                     prune.kind == PruneKind::heads
                         ? structured_plan(*run.model, run.tuning.get(), prune.heads_per_layer, scoring)
                         : unstructured_plan(*run.model, run.tuning.get(), {prune.p_adapt, prune.p_rest}, scoring));
  });
  prune_plan_load(run);
  nlohmann::json record = counts_of(run);
  record["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data, run.ranks.comm);
  if (!search.is_null()) record["search"] = search;
  record["seconds"] = seconds_since(start);
  stage_record(run, Stage::prune, record);
}

}  // namespace dsee
