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
// The run directory (run_dir.h) records the recipe first (config.toml); a
// run directory holding another recipe is refused with the differing keys,
// and one another process works in is refused naming it (run.lock). Each
// finished stage leaves stages/<stage>.json (its results); re-running the
// recipe skips finished stages and resumes an interrupted one from its
// checkpoint. summary.json is written last. One file per stage: stages.h.
//
// Under mpirun (or srun) every rank runs the same pipeline with data
// parallelism over the trainable parameters: rank 0 computes Ω and the
// pruning plan and every rank reads them from rank 0's files, each rank trains on its piece of every
// global batch and the gradients are averaged, evaluation is sharded and the
// predictions gathered, and only rank 0 writes under the run directory (see
// Note [Data parallelism in the pipeline] in pipeline.cpp). The run
// directory, the data and the model must be on a file system every rank sees.
#pragma once

#include <nlohmann/json.hpp>

#include "distributed/ranks.h"
#include "recipes/recipe.h"

namespace dsee {

// Runs the recipe (every arm of run.compare, or the one run) and returns the
// summary written to summary.json (on every rank). A collective when
// ranks.comm is set: every rank calls it with the same recipe.
nlohmann::json pipeline_run(const Recipe& recipe, const Ranks& ranks = {});

}  // namespace dsee
