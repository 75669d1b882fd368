// Exporting the final model of a run (`dsee export`, and the pipeline's export
// stage, which calls export_write so both take one code path).
//
//   hf    the merged model (core/tuning/tuning.h model_merge: masks applied, heads
//         removed and listed in config.json's pruned_heads) as a Hugging Face
//         folder: config.json + model.safetensors. An adapter run (not
//         mergeable) adds adapters.safetensors beside the base model
//         (Note [Exporting adapters] in export.cpp, docs/export.md).
//   peft  a LoRA run without pruning as a PEFT adapter folder:
//         adapter_config.json + adapter_model.safetensors, loadable with
//         peft.PeftModel.from_pretrained onto the run's base model. DSEE
//         (S has no PEFT equivalent), full fine-tuning and pruned runs are
//         refused with dsee::Error saying to use hf.
//
// export_write (export.cpp) writes a model in memory; export_run
// (stage_export.cpp, beside the pipeline's export stage) rebuilds the final
// model of a finished run directory from its files first.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "core/model/pretrained_model.h"
#include "core/tuning/tuning.h"
#include "recipes/recipe.h"
#include "recipes/run_dir.h"

namespace dsee {

class PretrainedModel;
class ModelTuning;

// Writes `model` (tuning attached, pruning plan applied) to `out` in
// `format`. hf merges the model in place (the tuning is unusable afterwards).
void export_write(PretrainedModel& model, ModelTuning& tuning, ExportFormat format, const std::filesystem::path& out);

// The final model of the finished run in `run_dir`, rebuilt on the CPU in
// fp32 (Note [Rebuilding a run] in stage_export.cpp) with its tuning attached
// and its pruning plan applied; `dsee generate --run` decodes with it. With
// `lock`, the run's lock is taken once the directory checks pass, before
// anything is loaded, and held while this object lives.
struct RebuiltRun {
  RebuiltRun(const std::filesystem::path& run_dir, bool lock);
  Recipe recipe;
  RunDir dir;
  std::filesystem::path model_path;  // the pretrained model folder the run started from
  std::unique_ptr<PretrainedModel> model;
  std::shared_ptr<ModelTuning> tuning;
};

// Rebuilds the final model of the finished run in `run_dir` (RebuiltRun) and writes it to `out`
// (empty: run_dir/export). Writing into the run directory, it first takes
// the run's lock (RunDir::lock) unless `lock` is false. Returns `out`.
std::filesystem::path export_run(const std::filesystem::path& run_dir, ExportFormat format,
                                 const std::filesystem::path& out = {}, bool lock = true);

}  // namespace dsee
