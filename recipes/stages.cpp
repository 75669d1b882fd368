// What the stages share: see stages.h.
#include "recipes/stages.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "base/error.h"
#include "core/train/checkpoint.h"
#include "core/tuning/counting.h"

namespace dsee {

// Note [Choosing stages]
// ~~~~~~~~~~~~~~~~~~~~~~
// run.stages lists the stages one invocation runs, in pipeline order; empty:
// all the recipe configures. The pipeline still walks every stage in order:
// a finished stage is loaded from its files as always, a listed one runs,
// and an unlisted one that has not run stops the invocation with an error
// (a later listed stage needs it). After the last listed stage the arm
// returns a partial summary ("stopped_after"); summary.json is written only
// when eval runs. run.stages is left out of the run directory's recorded
// recipe and of checkpoints (Recipe::identity), so the same run directory
// can be driven stage by stage: run.stages = ["omega"], then ["train"], then
// the rest.

bool StagePlan::runs(Stage stage) const {
  return listed.empty() || std::find(listed.begin(), listed.end(), stage) != listed.end();
}

StagePlan stage_plan_of(const Recipe& recipe, bool arm) {
  StagePlan plan{recipe.run.stages};
  const auto configured = [&](Stage stage, bool yes, const std::string& why) {
    DSEE_CHECK(arm || !plan.runs(stage) || plan.listed.empty() || yes, "run.stages lists {}, but {}", stage_name(stage),
               why);
  };
  configured(Stage::omega, recipe.tuning.method == TuningMethod::dsee,
             fmt::format("tuning.method = {} has no Ω (only dsee does)", tuning_method_name(recipe.tuning.method)));
  configured(Stage::prune, recipe.prune.kind != PruneKind::none, "prune.kind = none");
  configured(Stage::retune, recipe.retunes(), "re-tuning needs prune.kind other than none and retune.epochs > 0");
  configured(Stage::export_, recipe.export_.format.has_value(), "export.format = none");
  return plan;
}

Run::Run(const Recipe& r, RunDir d, Ranks k, StagePlan p)
    : recipe(r), dir(std::move(d)), ranks(std::move(k)), plan(std::move(p)) {}

std::uint64_t Run::model_hash() {
  if (!weights_hash_) weights_hash_ = model_weights_hash(model_path);
  return *weights_hash_;
}

// Note [Stages and their records]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A stage is finished when stages/<stage>.json exists; that file holds what
// the stage measured (dev metrics, counts, seconds) and is written last, by
// rename, so a crash never leaves a stage half-recorded. What later stages
// need from an earlier one lives in files the earlier stage wrote before its
// record: omega.h5 (Ω), ckpt/ and trainable-<stage>.safetensors (the
// trainable tensors after train or retune), masks.h5 (the pruning plan).
// Re-running a recipe rebuilds the in-memory state from those files in stage
// order, so `dsee run` after a crash or a pre-emption continues where the
// previous process stopped.

bool stage_finished(Run& run, Stage stage) {
  const std::string record = root_does(run.ranks, fmt::format("reading stages/{}.json", stage_name(stage)), [&] {
    const auto json = run.dir.record_read(stage);
    return json ? json->dump() : std::string();
  });
  if (record.empty()) return false;
  run.stages[stage_name(stage)] = nlohmann::json::parse(record);
  spdlog::info("{}: stage {} finished before, skipped", run.dir.name(), stage_name(stage));
  return true;
}

void stage_record(Run& run, Stage stage, nlohmann::json record) {
  root_writes(run.ranks, fmt::format("writing stages/{}.json", stage_name(stage)),
              [&] { run.dir.record_write(stage, record); });
  run.stages[stage_name(stage)] = std::move(record);
}

void stage_required(const Run& run, Stage stage) {
  std::vector<std::string> listed;
  for (const Stage s : run.plan.listed) listed.emplace_back(stage_name(s));
  DSEE_CHECK(run.plan.runs(stage),
             "run.stages = [{}] leaves out stage {}, which a listed stage needs and which has not run in '{}'; add "
             "it to run.stages",
             fmt::join(listed, ", "), stage_name(stage), run.dir.path().string());
}

nlohmann::json counts_of(Run& run) {
  const auto count = model_count(*run.model, run.data.seq_len());
  return {{"trainable_parameters", trainable_parameter_count(*run.tuning)},
          {"parameters", count.parameters},
          {"nonzero_parameters", count.nonzero_parameters},
          {"flops_dense", count.flops_dense},
          {"flops_nonzero", count.flops_nonzero}};
}

NamedTensors trainables_of(Run& run) {
  NamedTensors tensors;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) tensors.emplace_back(name, tensor.detach());
  return tensors;
}

}  // namespace dsee
