// The checkpoints of a training stage: see train_checkpoints.h.
//
// Note [Resuming a training stage]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The train stage checkpoints into ckpt/, the retune stage into
// ckpt/retune/ (ckpt.every steps, 0: each epoch end; ckpt.keep_last kept),
// and on a stop signal when run.checkpoint_on_signal (distributed/stop_signal.h).
// A stage that is not finished (no stages/<stage>.json) and finds a readable
// checkpoint in its folder continues from it: the recipe and the pretrained
// weights must match (checkpoint_check_compatible), then the trainable
// tensors, AdamW's state, the RNG states and the trainer's progress (kept
// in the checkpoint's /scheduler attributes, Note [Resuming] in
// core/train/trainer.cpp) come back and the trainer goes on bit-exactly. The
// stage's seconds count only this process's part. Under data parallelism
// rank 0 picks, verifies and reads the checkpoint, then every other rank
// reads the same file (checked by fingerprint); checkpoints are written by
// rank 0 inside root_writes, which every rank enters at the same step. The
// data position is global, so a run resumes on any number of ranks.
#include "recipes/train_checkpoints.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <csignal>
#include <limits>
#include <map>

#include "base/shape_text.h"
#include "core/train/checkpoint.h"
#include "distributed/stop_signal.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// The trainer's progress in the checkpoint's /scheduler attributes.
constexpr const char* kProgressKeys[] = {
    "step", "skipped_steps", "best_metric", "best_step", "evaluations_without_gain", "metrics_bytes"};

std::map<std::string, double> progress_to_scheduler(const TrainerProgress& p) {
  return {{"step", static_cast<double>(p.step)},
          {"skipped_steps", static_cast<double>(p.skipped_steps)},
          {"best_metric", p.best_metric ? *p.best_metric : std::numeric_limits<double>::quiet_NaN()},
          {"best_step", static_cast<double>(p.best_step)},
          {"evaluations_without_gain", static_cast<double>(p.evaluations_without_gain)},
          {"metrics_bytes", static_cast<double>(p.metrics_bytes)}};
}

TrainerProgress progress_from_checkpoint(const fs::path& path, const CheckpointState& state) {
  for (const char* key : kProgressKeys)
    DSEE_CHECK(state.scheduler.contains(key), "{}: scheduler attribute '{}' is missing; not a `dsee run` checkpoint",
               path.string(), key);
  const auto& m = state.scheduler;
  TrainerProgress p;
  p.step = state.step;
  p.epoch = state.epoch;
  p.sample_index = state.sample_index;
  p.skipped_steps = static_cast<std::int64_t>(m.at("skipped_steps"));
  if (!std::isnan(m.at("best_metric"))) p.best_metric = m.at("best_metric");
  p.best_step = static_cast<std::int64_t>(m.at("best_step"));
  p.evaluations_without_gain = static_cast<std::int64_t>(m.at("evaluations_without_gain"));
  p.metrics_bytes = static_cast<std::int64_t>(m.at("metrics_bytes"));
  DSEE_CHECK(static_cast<std::int64_t>(m.at("step")) == state.step, "{}: scheduler step {} differs from step {}",
             path.string(), m.at("step"), state.step);
  return p;
}

}  // namespace

StageCheckpoints::StageCheckpoints(Run& run, fs::path dir, const BestTensors& best)
    : run_(run), dir_(std::move(dir)), best_(best) {}

void StageCheckpoints::write(const TrainerProgress& progress) {
  DSEE_ASSERT(trainer_ != nullptr, "a checkpoint before resume() named the trainer");
  CheckpointState state;
  state.step = progress.step;
  state.epoch = progress.epoch;
  state.sample_index = progress.sample_index;
  state.trainable = trainables_of(run_);
  state.best = best_.tensors;
  state.optimizer = trainer_->optimizer().state_export();
  state.optimizer_step = progress.step;
  state.scheduler = progress_to_scheduler(progress);
  checkpoint_capture_rng(state);
  state.omega = run_.omega;
  state.omega_info = run_.omega_info;
  state.plan = run_.prune_plan;
  state.config_text = run_.recipe.identity;
  state.model_path = run_.model_path.string();
  state.model_weights_hash = run_.model_hash();
  // Every rank reaches this hook at the same step (the trainer's branches
  // agree, Note [The loop on many ranks]); rank 0 writes it, every rank
  // learns its path.
  const int keep_last = static_cast<int>(run_.recipe.ckpt.keep_last);
  last_ =
      root_does(run_.ranks, "writing a checkpoint", [&] { return checkpoint_write(dir_, state, keep_last).string(); });
  last_step_ = progress.step;
  spdlog::debug("{}: checkpoint {}", run_.dir.name(), last_.string());
}

std::optional<TrainerProgress> StageCheckpoints::resume(Trainer& trainer, BestTensors& best) {
  trainer_ = &trainer;
  // Rank 0 picks, checks and reads the checkpoint; the others read the same file.
  std::optional<LoadedCheckpoint> loaded;
  resumed_from_ = root_does(run_.ranks, "reading the latest checkpoint", [&] {
    loaded = checkpoint_load_latest(dir_);
    if (!loaded) return std::string();
    checkpoint_check_compatible(loaded->path, loaded->state, run_.recipe.identity, run_.model_hash());
    return loaded->path.string();
  });
  if (resumed_from_.empty()) return std::nullopt;
  const std::string& path = resumed_from_;
  if (!run_.ranks.root()) loaded = LoadedCheckpoint{path, checkpoint_read(path)};
  file_verify_across_ranks(run_.ranks, path);
  const TrainerProgress progress = progress_from_checkpoint(path, loaded->state);
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> saved;
  for (const auto& [name, tensor] : loaded->state.trainable) saved[name] = tensor;
  for (auto& [name, tensor] : run_.tuning->trainable_parameters()) {
    const auto it = saved.find(name);
    DSEE_CHECK(it != saved.end(), "{}: trainable tensor '{}' is missing", path, name);
    DSEE_CHECK(it->second.sizes() == tensor.sizes(), "{}: trainable tensor '{}' has shape {}, the run expects {}", path,
               name, shape_text(it->second.sizes()), shape_text(tensor.sizes()));
    tensor.copy_(it->second);
  }
  trainer.optimizer().state_import(loaded->state.optimizer);
  checkpoint_restore_rng(loaded->state);
  best.tensors = loaded->state.best;
  best.step = best.tensors.empty() ? -1 : progress.best_step;
  return progress;
}

void StageCheckpoints::stopped(std::int64_t steps, std::int64_t total) const {
  stop_signals_ignore();  // every rank agreed, the checkpoint is written
  const int signal = stop_signal();
  const std::string by = signal == SIGINT    ? "SIGINT"
                         : signal == SIGTERM ? "SIGTERM"
                         : signal == SIGUSR1 ? "SIGUSR1"
                                             : fmt::format("signal {}", signal);
  if (last_step_ == steps)  // written at the stop (a periodic one, too, is due then)
    throw StopRequested(signal, fmt::format("stopped by {} at step {} of {}; checkpoint {}; run the same command "
                                            "again to resume",
                                            by, steps, total, last_.string()));
  // The newest checkpoint of the stage, if any: this process's periodic one, or the one it resumed from.
  const std::string resume_from = !last_.empty()           ? last_.string()
                                  : !resumed_from_.empty() ? resumed_from_
                                                           : "the start of the stage (no checkpoint yet)";
  throw StopRequested(signal, fmt::format("stopped by {} at step {} of {}; no checkpoint written "
                                          "(run.checkpoint_on_signal = false); running the same command again "
                                          "resumes from {}",
                                          by, steps, total, resume_from));
}

}  // namespace dsee
