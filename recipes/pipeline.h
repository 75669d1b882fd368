// The pipeline `dsee run RECIPE.toml` executes: the stages of one recipe in
// one run directory, and recipes that compare several arms side by side
// (`run.compare`, the built-in demo).
//
// Stages (each skipped when the recipe does not configure it):
//   data     task.name = demo: the synthetic model, teacher and labels
//            (recipes/demo_data.h) in <run>/data (shared by the arms)
//            GLUE tasks: task.data_dir's TSV files encoded with model.path's
//            tokenizer (recipes/task_data.h)
//   omega    tuning.method = dsee: Ω of every adapted matrix → omega.h5
//   train    the tuning method on the training set → ckpt/, metrics.jsonl
//   prune    prune.kind = unstructured | heads: the plan from the trained
//            update (|ΔW| pools or head scores) → masks.h5
//   retune   retune.epochs > 0 after pruning: train again with the plan fixed
//   eval     dev metrics of the final model (the task's, core/train/metrics.h),
//            dev outputs → predictions-dev.safetensors
//   export   export.format = hf | peft → export/
// The run directory records the resolved config.toml first; a run directory
// holding another recipe is refused with the differing keys. Each finished
// stage leaves stages/<stage>.json (its results); re-running the recipe
// skips finished stages and resumes an interrupted one from its checkpoint.
// summary.json is written last.
//
// Under mpirun (or srun) every rank runs the same pipeline with data
// parallelism over the trainable parameters: rank 0 computes Ω and the
// pruning plan and broadcasts them, each rank trains on its piece of every
// global batch and the gradients are averaged, evaluation is sharded and the
// predictions gathered, and only rank 0 writes under the run directory (see
// Note [Data parallelism in the pipeline] in pipeline.cpp). The run
// directory, the data and the model must be on a file system every rank sees.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>

#include "base/config.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "distributed/communicator.h"
#include "recipes/ranks.h"

namespace dsee {

// Runs the recipe (every arm of run.compare, or the one run) and returns the
// summary written to summary.json (on every rank). A collective when
// ranks.comm is set: every rank calls it with the same recipe.
nlohmann::json pipeline_run(const Config& config, const PipelineRanks& ranks = {});

// An arm of run.compare: "name: key=value key=value" → name and overrides.
struct CompareArm {
  std::string name;
  std::vector<std::string> overrides;
};
CompareArm compare_arm_parse(const std::string& text);

// The tuning options a recipe configures (tuning.*, run.seed, retune.mask_update).
TuningOptions recipe_tuning_options(const Config& config);

// The trainer's options for training stage `stage` ("train" or "retune"):
// epochs, steps, lr (retune.lr, else train.lr), accumulation, AdamW
// (train.weight_decay, decay_exclude_bias_norm, adam_beta1/2, adam_epsilon),
// the schedule and its warm-up, clipping, evaluation, best metric and early
// stopping. dsee::Error when both warm-up keys are set. The pipeline adds
// the run's hooks (metrics file, checkpoints, ranks).
TrainerOptions recipe_trainer_options(const Config& config, const std::string& stage);

}  // namespace dsee
