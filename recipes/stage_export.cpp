// The export stage (export.format = hf | peft → export/), and `dsee export`,
// which rebuilds the final model of a finished run directory and exports it.
//
// Note [Rebuilding a run]
// ~~~~~~~~~~~~~~~~~~~~~~~
// The run directory holds everything the final model depends on, and
// export_run replays the pipeline's stages from it in the pipeline's order,
// through the same loaders the stages use once finished (omega_load,
// trainables_load, prune_plan_load in stages.h): the pretrained model
// (model.path, or the demo's generated model in the run's data folder, which
// for an arm of run.compare is its parent's), Ω from omega.h5 (dsee), the
// tuning attached with the recipe's options, the trained tensors of
// trainable-train.safetensors, the pruning plan of masks.h5, then the
// re-tuned tensors of trainable-retune.safetensors. The order matters: head
// pruning shrinks A, B and Ω, so the train tensors have the unpruned shapes
// and the retune tensors the pruned ones. stages/eval.json marks a finished
// run; without it the export is refused (the tensors may be half-trained).
// The model is rebuilt on the CPU in fp32, whatever run.device and
// run.precision were.
#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "recipes/export.h"
#include "recipes/stages.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

fs::path require_file(const fs::path& path, const fs::path& run_dir, const std::string& why) {
  DSEE_CHECK(fs::exists(path),
             "run directory '{}' is not finished: '{}' ({}) is missing. Run `dsee run` with the run's recipe first",
             run_dir.string(), path.lexically_relative(run_dir).string(), why);
  return path;
}

// The pretrained model the run started from (Note [Rebuilding a run]).
fs::path run_model_path(const Recipe& recipe, const fs::path& run_dir) {
  if (!recipe.model.path.empty()) return recipe.model.path;
  const fs::path own = demo_pretrained_dir(RunDir(run_dir).data());
  const fs::path shared = demo_pretrained_dir(RunDir(run_dir.parent_path()).data());
  for (const auto& candidate : {own, shared})
    if (fs::exists(candidate / "config.json")) return candidate;
  throw Error(fmt::format(
      "run directory '{}': the demo's generated model is in neither '{}' nor '{}' (the data folder of a run or of "
      "the run.compare arms); run `dsee run` with the run's recipe to regenerate it",
      run_dir.string(), own.string(), shared.string()));
}

// Whether `path` lies inside `dir` (after resolving links and "..").
bool path_inside(const fs::path& path, const fs::path& dir) {
  const auto p = fs::weakly_canonical(path);
  auto d = fs::weakly_canonical(dir);
  if (d.filename().empty()) d = d.parent_path();  // "run/" names the folder "run"
  return std::mismatch(d.begin(), d.end(), p.begin(), p.end()).first == d.end();
}

}  // namespace

void stage_export(Run& run) {
  // Skipped once done, like the training stages: `dsee export RUN_DIR` writes another copy.
  const auto& format = run.recipe.export_.format;
  if (!format || !run.plan.runs(Stage::export_) || stage_finished(run, Stage::export_)) return;
  root_writes(run.ranks, "exporting the model",
              [&] { export_write(*run.model, *run.tuning, *format, run.dir.export_dir()); });
  stage_record(run, Stage::export_, {{"format", export_format_name(*format)}, {"path", run.dir.export_dir().string()}});
}

RebuiltRun::RebuiltRun(const fs::path& run_dir, bool lock) : dir(run_dir) {
  DSEE_CHECK(fs::is_directory(run_dir), "run directory '{}' does not exist", run_dir.string());
  DSEE_CHECK(fs::exists(dir.config()),
             "'{}' is not a run directory: config.toml is missing (dsee run writes it first). Run `dsee run` with the "
             "recipe first",
             run_dir.string());
  recipe = recipe_load(dir.config());
  DSEE_CHECK(recipe.run.compare.empty(), "'{}' holds the arms of run.compare; use one arm's directory ({}/<arm>)",
             run_dir.string(), run_dir.string());
  require_file(dir.record(Stage::eval), run_dir, "written when the run finishes");
  if (lock) dir.lock();

  const bool dsee = recipe.tuning.method == TuningMethod::dsee;
  const bool pruned = recipe.prune.kind != PruneKind::none;
  if (dsee) require_file(dir.omega(), run_dir, "Ω of the dsee run");
  require_file(dir.trainables(Stage::train), run_dir, "the trained tensors");
  if (pruned) require_file(dir.masks(), run_dir, "the pruning plan");
  const bool retuned = pruned && fs::exists(dir.trainables(Stage::retune));
  DSEE_CHECK(!pruned || retuned || !fs::exists(dir.record(Stage::retune)),
             "run directory '{}': stages/retune.json exists but trainable-retune.safetensors is missing; delete "
             "stages/retune.json and run `dsee run` again",
             run_dir.string());

  Run run(recipe, RunDir(run_dir), Ranks{}, StagePlan{});
  ModelLoadOptions load;
  load.task = ModelTask::sequence_classification;
  run.model_path = run_model_path(recipe, run_dir);
  run.model = model_load(run.model_path, load);
  if (dsee) omega_load(run);
  run.tuning = tuning_attach(*run.model, recipe_tuning_options(recipe), run.omega);
  trainables_load(run, Stage::train);
  if (pruned) prune_plan_load(run);
  if (retuned) trainables_load(run, Stage::retune);
  model_path = run.model_path;
  model = std::move(run.model);
  tuning = std::move(run.tuning);
}

fs::path export_run(const fs::path& run_dir, ExportFormat format, const fs::path& out_arg, bool lock) {
  const fs::path out = out_arg.empty() ? RunDir(run_dir).export_dir() : out_arg;
  RebuiltRun rebuilt(run_dir, lock && path_inside(out, run_dir));
  export_write(*rebuilt.model, *rebuilt.tuning, format, out);
  return out;
}

}  // namespace dsee
