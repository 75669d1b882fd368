// The recipe pipeline: see pipeline.h. Each stage lives in its own file
// (stages.h); here they are strung together, one arm after another.
//
// Note [Data parallelism in the pipeline]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Every rank runs the same stages and issues the same collectives in the
// same order; what differs is who computes and who writes:
//  - start-up: the ranks compare fingerprints of the resolved config, the
//    library versions, the model's tensor shapes, the pretrained weights and
//    the training data (fingerprint_verify*: a mismatch names the ranks and
//    the thing on every rank, so all of them stop with the same error);
//  - files: only rank 0 writes under the run directory, through root_does()
//    (distributed/ranks.h), which also tells every rank whether rank 0
//    succeeded (a broadcast, so it is a barrier too) and turns rank 0's
//    failure into the same error on every rank; whether a stage is finished
//    is rank 0's answer, broadcast;
//  - Ω, the pruning plan and saved tensors cross ranks as the files rank 0
//    wrote: rank 0 computes and writes omega.h5, masks.h5, a checkpoint or
//    trainable-<stage>.safetensors (or picks the one to resume from), then
//    every rank reads that file and the ranks compare fingerprints of its
//    bytes (read_on_every_rank). So the state a rank holds is the one a later
//    run would load, and one codec per state type serves files and ranks;
//    with omega.split_across_ranks each rank computes Ω of its share of the
//    matrices first and all_gather_rows assembles them for rank 0 to write;
//  - training: each rank takes its contiguous piece of every global
//    micro-batch (DistributedSampler); its loss is the piece's mean scaled
//    by pieces/ranks so that the average of the ranks' gradients is the
//    1-rank gradient even when pieces differ in size; GradientSync averages
//    the trainable gradients once per optimizer step; every
//    dist.fingerprint_every steps the ranks compare their trainable tensors
//    and the order of their collectives (fingerprint_verify_state: a
//    mismatch names the tensor or "collective order");
//  - evaluation: each rank predicts its batch_shard_range of the dev set
//    (whole eval.batch_size batches of the 1-rank run: the same forward
//    passes, so the same logits bit for bit) and all_gather_rows restores
//    the 1-rank order, so the metrics and predictions are the 1-rank ones
//    on every rank.
// Dropout draws differ between 1 and N ranks (each rank draws for its piece
// only), so bit-for-bit agreement with 1 rank holds only without dropout.
#include "recipes/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/files.h"
#include "recipes/compare.h"
#include "recipes/prune_earlybert.h"
#include "recipes/stages.h"

namespace dsee {
namespace {

// The demo's data options, from the base recipe for every arm (Note [The
// arms' shared data] in compare.cpp).
DemoOptions demo_options_of(const Recipe& recipe) {
  DemoOptions o;
  o.train_size = recipe.task.train_size;
  o.dev_size = recipe.task.dev_size;
  o.teacher_rank = recipe.task.teacher_rank;
  o.teacher_lowrank_std = recipe.task.teacher_lowrank_std;
  o.teacher_sparse_scale = recipe.task.teacher_sparse_scale;
  o.teacher_margin = recipe.task.teacher_margin;
  o.omega = recipe_omega_options(recipe);
  o.omega.method = OmegaMethod::grebsmo;  // the teacher plants on GreBsmo's Ω whatever the arm uses
  o.omega.c = std::max<std::int64_t>(o.omega.c, 1);
  return o;
}

// What an arm returns when run.stages ends before eval (Note [Choosing stages] in stages.cpp).
nlohmann::json summary_partial(const Run& run, Stage stage, StageClock::time_point start) {
  spdlog::info("{}: run.stages ends with {}; run the recipe again (other run.stages, or none) to go on", run.dir.name(),
               stage_name(stage));
  return {{"method", tuning_method_name(run.recipe.tuning.method)},
          {"prune", prune_kind_name(run.recipe.prune.kind)},
          {"stopped_after", stage_name(stage)},
          {"stages", run.stages},
          {"seconds", seconds_since(start)}};
}

// What an arm returns when eval ran, also written to summary.json.
nlohmann::json summary_final(const Run& run, const nlohmann::json& eval, StageClock::time_point start) {
  nlohmann::json summary = {{"method", tuning_method_name(run.recipe.tuning.method)},
                            {"prune", prune_kind_name(run.recipe.prune.kind)},
                            {"trainable_parameters", eval["trainable_parameters"]},
                            {"nonzero_parameters", eval["nonzero_parameters"]},
                            {"flops_dense", eval["flops_dense"]},
                            {"flops_nonzero", eval["flops_nonzero"]},
                            {"dev", eval["dev"]},
                            {"stages", run.stages},
                            {"seconds", seconds_since(start)}};
  if (eval.contains("test")) summary["test"] = eval["test"];  // eval.splits = ["dev", "test"]
  root_writes(run.ranks, "writing summary.json", [&] { file_write_json(run.dir.summary(), summary); });
  return summary;
}

// The recipe's checks that need no file: refused before the directory is claimed.
void recipe_check(const Recipe& recipe) {
  const auto method = recipe.tuning.method;
  DSEE_CHECK(recipe.export_.format != ExportFormat::peft || method == TuningMethod::prefix ||
                 (method == TuningMethod::lora && recipe.prune.kind == PruneKind::none),
             "export.format = peft needs tuning.method = lora with prune.kind = none, or tuning.method = prefix "
             "(got {} with prune.kind = {}): PEFT's adapters have no sparse residual S, no masks and no removed "
             "heads; use export.format = hf",
             tuning_method_name(method), prune_kind_name(recipe.prune.kind));
  DSEE_CHECK(recipe.prune.kind == PruneKind::none || method == TuningMethod::full || tuning_method_has_update(method),
             "prune.kind = {} with tuning.method = {}: pruning scores the update ΔW of the adapted matrices (and "
             "re-tunes it), which {} does not have (it trains model tensors in place or adds adapters); set "
             "prune.kind = none, or prune a dsee or lora run",
             prune_kind_name(recipe.prune.kind), tuning_method_name(method), tuning_method_name(method));
  if (recipe.prune.kind == PruneKind::imp) imp_recipe_check(recipe);
  if (recipe.prune.kind == PruneKind::earlybert) earlybert_recipe_check(recipe);
}

// One arm of the recipe in `dir` (`arm`: one of run.compare's), its data
// made with `demo`.
nlohmann::json run_arm(const Recipe& recipe, RunDir dir, const Ranks& ranks, bool arm, const DemoOptions& demo) {
  const auto start = StageClock::now();
  recipe_check(recipe);
  Run run(recipe, std::move(dir), ranks, StagePlan{});
  run.device = run_device(recipe, ranks);
  run.plan = stage_plan_of(recipe, arm);
  root_writes(ranks, "claiming the run directory", [&] { run.dir.claim(recipe.identity, recipe.run.lock); });

  stage_data(run, demo);
  stage_omega(run);
  if (run.plan.ends_with(Stage::omega)) return summary_partial(run, Stage::omega, start);
  stage_pretrained(run);
  stage_train(run, Stage::train);
  if (run.plan.ends_with(Stage::train)) return summary_partial(run, Stage::train, start);
  stage_prune(run);
  if (run.plan.ends_with(Stage::prune)) return summary_partial(run, Stage::prune, start);
  stage_train(run, Stage::retune);
  if (run.plan.ends_with(Stage::retune)) return summary_partial(run, Stage::retune, start);
  const nlohmann::json eval = stage_eval(run);
  stage_export(run);
  if (eval.is_null()) return summary_partial(run, Stage::export_, start);
  return summary_final(run, eval, start);
}

}  // namespace

nlohmann::json pipeline_run(const Recipe& recipe, const Ranks& ranks) {
  ranks_verify_recipe(recipe, ranks);
  RunDir dir = RunDir::of(recipe);
  if (recipe.run.compare.empty()) return run_arm(recipe, std::move(dir), ranks, false, demo_options_of(recipe));

  // run.compare: the arms in <run>/<arm>, sharing <run>/data.
  stage_plan_of(recipe, true);  // names and order, before the run directory is claimed
  const auto arms = compare_arms(recipe, dir.data());
  const DemoOptions demo = demo_options_of(recipe);
  root_writes(ranks, "claiming the run directory", [&] { dir.claim(recipe.identity, recipe.run.lock); });
  std::vector<std::pair<CompareArm, nlohmann::json>> summaries;
  for (const auto& arm : arms) {
    const Recipe arm_recipe = recipe_with_overrides(recipe, recipe.source + " arm " + arm.name, arm.overrides);
    summaries.emplace_back(arm, run_arm(arm_recipe, dir.arm(arm.name), ranks, true, demo));
  }
  const bool partial = std::any_of(summaries.begin(), summaries.end(),
                                   [](const auto& arm) { return arm.second.contains("stopped_after"); });
  if (ranks.root() && !partial) compare_table_print(summaries);
  if (partial)
    spdlog::info("{}: run.stages stopped the arms before eval; the comparison table is printed when they finish",
                 dir.name());
  nlohmann::json summary = {{"arms", nlohmann::json::array()}};
  for (const auto& [arm, s] : summaries) {
    nlohmann::json entry = {{"name", arm.name}, {"summary", s}};
    if (arm.arm != arm.name) entry["arm"] = arm.arm;
    summary["arms"].push_back(std::move(entry));
  }
  root_writes(ranks, "writing summary.json", [&] { file_write_json(dir.summary(), summary); });
  return summary;
}

}  // namespace dsee
