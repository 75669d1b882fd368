// The pipeline's stages, one file each, and what they share: the state an
// arm builds up (Run), the stage records, and the plan of which stages this
// invocation runs (run.stages).
//
// Every stage has one shape: when its record says it finished, it loads what
// it produced; otherwise it computes, writes its files, then its record
// (Note [Stages and their records] in stages.cpp). Under data parallelism
// every function here is a collective (Note [Data parallelism in the
// pipeline] in pipeline.cpp): rank 0 decides, reads and writes, every rank
// learns the outcome and reads what rank 0 wrote.
//
//   stage_data.cpp     the task's data and the pretrained model; start-up checks
//   stage_omega.cpp    Ω (tuning.method = dsee) → omega.h5
//   stage_eval.cpp     the tuning attached and the pretrained model evaluated;
//                      the final dev metrics and predictions
//   stage_train.cpp    train and retune: the trainer, the best evaluation
//                      (checkpoints and resume: train_checkpoints.h)
//   stage_prune.cpp    the pruning plan → masks.h5
//   stage_prune_imp.cpp  prune.kind = imp: rounds of prune, rewind, retrain → masks.h5
//   stage_export.cpp   export.format's export; `dsee export` of a finished run
#pragma once

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/named_tensor.h"
#include "core/model/pretrained_model.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "core/sparsity/prune_plan.h"
#include "core/tuning/tuning.h"
#include "distributed/ranks.h"
#include "recipes/demo_data.h"
#include "recipes/recipe.h"
#include "recipes/run_dir.h"
#include "recipes/task_data.h"

namespace dsee {

// The stages' records count seconds of this process.
using StageClock = std::chrono::steady_clock;
inline double seconds_since(StageClock::time_point start) {
  return std::chrono::duration<double>(StageClock::now() - start).count();
}

// What run.stages asks of this invocation (Note [Choosing stages] in stages.cpp).
struct StagePlan {
  std::vector<Stage> listed;  // empty: every configured stage
  bool runs(Stage stage) const;
  bool ends_with(Stage stage) const { return !listed.empty() && listed.back() == stage; }
};

// run.stages checked against the recipe: for a single run each listed stage
// must be configured; arms of run.compare (`arm`) skip a listed stage they do
// not configure but still stop at its place.
StagePlan stage_plan_of(const Recipe& recipe, bool arm);

// The state one arm builds up, stage by stage.
struct Run {
  Run(const Recipe& recipe, RunDir dir, Ranks ranks, StagePlan plan);
  const Recipe& recipe;
  RunDir dir;
  Ranks ranks;
  StagePlan plan;
  c10::Device device = c10::kCPU;  // where the arm computes
  TaskData data;
  std::unique_ptr<PretrainedModel> model;
  std::filesystem::path model_path;
  std::vector<OmegaEntry> omega;
  OmegaFileInfo omega_info;
  std::shared_ptr<ModelTuning> tuning;
  PrunePlan prune_plan;
  nlohmann::json stages = nlohmann::json::object();  // the stages' records, and "pretrained"

  // model_weights_hash(model_path), computed once when first needed.
  std::uint64_t model_hash();

 private:
  std::optional<std::uint64_t> weights_hash_;
};

// Whether `stage` finished before (rank 0 reads its record, every rank
// learns it); its record then joins run.stages.
bool stage_finished(Run& run, Stage stage);
// Writes the stage's record (rank 0) and adds it to run.stages.
void stage_record(Run& run, Stage stage, nlohmann::json record);
// A stage that has not run in the directory, before a listed one: dsee::Error
// unless run.stages lists it.
void stage_required(const Run& run, Stage stage);

// Counts of the model as it would deploy now, FLOPs at the task's sequence length.
nlohmann::json counts_of(Run& run);
// The tuning's trainable tensors (detached, not copied).
NamedTensors trainables_of(Run& run);

// The stages, in pipeline order. Each returns at once when the recipe does
// not configure it.
// The task's data (the demo's made with `demo` in run.dir.data()) and the
// pretrained model on run.device.
void stage_data(Run& run, const DemoOptions& demo);
void stage_omega(Run& run);
// The tuning attached (Ω included) and the pretrained model evaluated
// (run.stages["pretrained"]); dsee::Error when train.metric_for_best is not
// among the evaluation's metrics.
void stage_pretrained(Run& run);
void stage_train(Run& run, Stage stage);  // Stage::train or Stage::retune
void stage_prune(Run& run);
void stage_prune_imp(Run& run);  // prune.kind = imp (stage_prune_imp.cpp), called by stage_prune
// prune.kind = imp's recipe checks: tuning.method = full, retune.epochs > 0,
// no tuning.init_from, prune.sparsity < 1 (dsee::Error naming the key).
void imp_recipe_check(const Recipe& recipe);
// The final dev metrics: the eval record (with the counts), or null when
// run.stages leaves eval out.
nlohmann::json stage_eval(Run& run);
void stage_export(Run& run);

// One run of the trainer with training stage `stage`'s options (Stage::train
// or Stage::retune) and the files it writes: a training stage's own
// (train_pass_of), or an IMP round's retraining (stage_prune_imp.cpp).
struct TrainPass {
  Stage stage = Stage::train;
  std::string name;                                   // metrics.jsonl's "stage" and log lines
  std::filesystem::path checkpoints;                  // its checkpoint folder, resumed from
  std::filesystem::path trainables, best_trainables;  // written at its end
};
TrainPass train_pass_of(const Run& run, Stage stage);
// The trainer over the task's data, from the pass's newest checkpoint when
// there is one; ends with pass.trainables. Returns the record a stage writes.
nlohmann::json train_pass_run(Run& run, const TrainPass& pass);

// The pretrained model of run.model_path, loaded as stage_data loads it (the
// task's head from run.seed): what IMP rewinds to.
std::unique_ptr<PretrainedModel> pretrained_model_load(const Run& run);

// The device the arm computes on (Note [The pipeline on CUDA] in
// stage_data.cpp), checked against the communicator's.
c10::Device run_device(const Recipe& recipe, const Ranks& ranks);

// What the stages load once finished, also used by `dsee export` (Note
// [Rebuilding a run] in stage_export.cpp). Every rank reads the file
// (read_on_every_rank).
void omega_load(Run& run);                    // omega.h5 → run.omega, checked against the adapted matrices
void trainables_load(Run& run, Stage stage);  // trainable-<stage>.safetensors → the tuning's tensors
void trainables_load_from(Run& run, const std::filesystem::path& path);  // the same from `path`
void prune_plan_load(Run& run);  // masks.h5 → run.prune_plan, applied to the model

// The start-up checks of a run on several ranks: the same resolved recipe
// and library versions everywhere (stage_data.cpp).
void ranks_verify_recipe(const Recipe& recipe, const Ranks& ranks);

}  // namespace dsee
