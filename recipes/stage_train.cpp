// The training stages, train and retune (retune.epochs > 0 after pruning):
// the trainer (core/train/trainer.h) over the task's training split, with
// checkpoints and a resume from the newest one (train_checkpoints.h), stop
// signals, the best evaluation, the data-parallel hooks, and tuning.init_from's
// tensors when train starts afresh (init_from.h). The stage ends
// with trainable-<stage>.safetensors and its record.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "base/env_vars.h"
#include "base/shape_text.h"
#include "core/io/safetensors.h"
#include "core/train/trainer.h"
#include "distributed/fingerprint.h"
#include "distributed/gradient_sync.h"
#include "distributed/stop_signal.h"
#include "recipes/init_from.h"
#include "recipes/stages.h"
#include "recipes/test_hooks.h"
#include "recipes/train_checkpoints.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// DSEE_TEST_PERTURB_RANK=RANK:STEP on that rank after that step.
void test_perturb(Run& run, std::int64_t step) {
  auto [name, tensor] = run.tuning->trainable_parameters().front();
  spdlog::warn("{}: rank {} adds 1 to tensor '{}' after step {}", env_vars::test_perturb_rank, run.ranks.rank, name,
               step);
  at::NoGradGuard no_grad;
  tensor.view({-1})[0].add_(1.0);
}

// The trainer's hooks for data parallelism (Note [The loop on many ranks] in
// core/train/trainer.cpp): gradient averaging, the global loss, agreed stops, the
// watchdog's step and the periodic fingerprint of the trainable tensors.
void data_parallel_options(Run& run, Communicator& comm, std::unique_ptr<GradientSync>& sync, TrainerOptions& options) {
  std::vector<at::Tensor> parameters;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) parameters.push_back(tensor);
  sync = std::make_unique<GradientSync>(comm, std::move(parameters));
  auto* gradient_sync = sync.get();
  options.sync_gradients = [gradient_sync] { gradient_sync->average_gradients(); };
  options.sum_over_ranks = [&comm](std::vector<double>& values) {
    at::Tensor sums = at::tensor(values, at::kDouble).to(comm.device());
    comm.all_reduce_sum(sums);
    sums = sums.cpu().contiguous();
    std::copy_n(sums.data_ptr<double>(), values.size(), values.begin());
  };
  options.should_stop = [&comm] { return stop_requested_on_any_rank(comm); };
  const std::int64_t every = run.recipe.dist.fingerprint_every;
  options.after_step = [&run, &comm, every](std::int64_t step) {
    comm.set_step(step + 1);
    if (test_hooks().perturbs(comm.rank(), std::to_string(step))) test_perturb(run, step);
    if (every > 0 && step % every == 0)
      fingerprint_verify_state(comm, fmt::format("trainable parameters after step {}", step), trainables_of(run));
  };
  comm.set_step(1);
}

// Note [The best evaluation]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~
// Every evaluation that improves train.metric_for_best (the trainer's
// on_best, on every rank at the same step) keeps a copy of the trainable
// tensors in memory; checkpoints carry that copy (/best), so a resumed stage
// has the same best as an uninterrupted one. At the stage's end the copy is
// written to trainable-<stage>-best.safetensors (metadata "step") and, with
// train.load_best_at_end, copied back into the model, so pruning, re-tuning,
// evaluation and export continue from the best evaluation instead of the
// last step. stages/<stage>.json records it under "best".

// The best evaluation at the stage's end: trainable-<stage>-best.safetensors
// and, with train.load_best_at_end, its tensors back in the model. The
// record's "best" (null: no evaluation ranked).
nlohmann::json best_finish(Run& run, const TrainPass& pass, const TrainResult& result, const BestTensors& best,
                           const std::string& metric) {
  const bool load_best = run.recipe.train.load_best_at_end;
  if (result.best_step < 0) return nullptr;
  if (best.step != result.best_step) {
    // Resumed from a checkpoint written before checkpoints carried /best.
    DSEE_CHECK(!load_best,
               "{}: the best evaluation (step {}) came before the checkpoint this stage resumed from, and that "
               "checkpoint holds no /best tensors (an older dsee wrote it); set train.load_best_at_end = false or "
               "delete {} to train the stage again",
               pass.name, result.best_step, pass.checkpoints.string());
    spdlog::warn(
        "{}: the tensors of the best evaluation (step {}) are not in the checkpoint this stage resumed from; "
        "{} is not written",
        pass.name, result.best_step, pass.best_trainables.filename().string());
    return nullptr;
  }
  root_writes(run.ranks, "writing " + pass.best_trainables.filename().string(), [&] {
    safetensors_save(pass.best_trainables, best.tensors,
                     {{"format", "pt"}, {"step", std::to_string(result.best_step)}});
  });
  if (load_best) {
    at::NoGradGuard no_grad;
    std::size_t i = 0;
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
      DSEE_ASSERT(best.tensors.at(i).name == name, "best tensor {} is '{}', the run's is '{}'", i,
                  best.tensors.at(i).name, name);
      tensor.copy_(best.tensors.at(i++).tensor);
    }
    spdlog::info("{}: {} ends with the tensors of its best evaluation (step {}, {} = {})", run.dir.name(), pass.name,
                 result.best_step, metric, *result.best_metric);
  }
  return {{"step", result.best_step}, {"metric", metric}, {"value", *result.best_metric}, {"loaded", load_best}};
}

}  // namespace

TrainPass train_pass_of(const Run& run, Stage stage) {
  return {stage, stage_name(stage), run.dir.checkpoints(stage), run.dir.trainables(stage),
          run.dir.best_trainables(stage)};
}

nlohmann::json train_pass_run(Run& run, const TrainPass& pass) {
  const Stage stage = pass.stage;
  const auto& recipe = run.recipe;
  const auto start = StageClock::now();
  TrainerOptions options = recipe_trainer_options(recipe, stage);
  if (run.ranks.root()) options.metrics_path = run.dir.metrics();
  options.metrics_stage = pass.name;
  options.progress = run.ranks.root();
  const auto micro_batch = recipe.train.batch_size / options.grad_accumulation;
  DSEE_CHECK(micro_batch >= 1 && micro_batch * options.grad_accumulation == recipe.train.batch_size,
             "train.batch_size ({}) must be a multiple of train.grad_accumulation ({})", recipe.train.batch_size,
             options.grad_accumulation);
  TaskBatches batches(
      run.data.train, micro_batch, static_cast<std::uint64_t>(recipe.run.seed) + (stage == Stage::train ? 0 : 1),
      run.ranks.rank, run.ranks.world_size,
      {.trim_padding = run.data.causal_lm, .length_buckets = run.data.causal_lm && recipe.train.length_buckets});
  at::manual_seed(static_cast<std::uint64_t>(recipe.run.seed));  // dropout
  std::unique_ptr<GradientSync> sync;
  if (auto* comm = run.ranks.comm) data_parallel_options(run, *comm, sync, options);

  // Note [The stage's closing evaluation]: the record's "dev" is the
  // evaluation of the tensors the stage ends with. When those are
  // bit-identical to the tensors of the trainer's last evaluation (the last
  // epoch ended with one) or of its best one (train.load_best_at_end
  // restored them), that evaluation's metrics are the record's and the dev
  // set is not run again. Every rank compares its own tensors and a
  // collective makes the choice common, so all ranks evaluate or none.
  // Trainable sets above 64M elements (full fine-tuning of large models)
  // keep no copy and are always evaluated again.
  constexpr std::int64_t kCompareLimit = std::int64_t{64} << 20;
  std::int64_t trainable_numel = 0;
  for (const auto& [name, tensor] : run.tuning->trainable_parameters()) trainable_numel += tensor.numel();
  std::optional<std::map<std::string, double>> last_metrics, best_metrics;
  std::vector<at::Tensor> last_tensors;
  BestTensors best;
  const auto on_best = [&](std::int64_t step) {
    best.tensors.clear();
    for (auto& [name, tensor] : run.tuning->trainable_parameters())
      best.tensors.push_back({name, tensor.detach().clone()});
    best.step = step;
    best_metrics = last_metrics;  // on_best follows the evaluation that found it
  };
  StageCheckpoints checkpoints(run, pass.checkpoints, best);
  options.checkpoint_every = recipe.ckpt.every;
  options.on_checkpoint = [&](const TrainerProgress& progress) { checkpoints.write(progress); };
  // A stop signal always ends the stage at a step boundary; the checkpoint
  // is written only with run.checkpoint_on_signal. With ranks the stop is
  // agreed by all (a collective), so every rank leaves at the same step.
  install_stop_handlers();
  options.checkpoint_on_stop = recipe.run.checkpoint_on_signal;
  options.should_stop = [steps = std::int64_t{0}, hooks = test_hooks(), comm = run.ranks.comm]() mutable {
    if (hooks.step_pause_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(hooks.step_pause_s));
    if (hooks.stop_after_step > 0 && ++steps == hooks.stop_after_step) std::raise(SIGTERM);
    return comm != nullptr ? stop_requested_on_any_rank(*comm) : stop_requested();
  };

  Trainer trainer(run.tuning->trainable_parameters(), options);
  const std::int64_t total = trainer.total_steps(batches);
  const std::optional<TrainerProgress> resume = checkpoints.resume(trainer, best);
  if (resume)
    spdlog::info("{}: resuming {} from {} (step {} of {})", run.dir.name(), pass.name,
                 fs::relative(checkpoints.resumed_from(), run.dir.path()).string(), resume->step, total);
  else if (stage == Stage::train && !recipe.tuning.init_from.empty())
    init_from_apply(run);  // a resumed stage has its checkpoint's tensors instead

  auto* model = run.model.get();
  auto* tuning = run.tuning.get();
  const auto loss = [&](const TrainBatch& batch) {
    tuning->set_training(true);
    if (batch.samples == 0) {  // an empty piece of a short global batch: zero loss, zero gradients
      at::Tensor zero = at::zeros({}, at::TensorOptions().device(model->device()));
      for (auto& [name, tensor] : tuning->trainable_parameters()) zero = zero + tensor.sum() * 0;
      if (run.data.causal_lm)  // no logits: the trainer's token-summed loss of them is that zero
        return at::zeros({0, batch.tensors.at("labels").size(1), model->config().vocab_size}, zero.options()) + zero;
      return zero;
    }
    if (run.data.causal_lm) return task_loss(*model, batch);  // logits: the trainer weighs tokens across ranks
    const auto mean = task_loss(*model, batch);
    return run.ranks.comm != nullptr ? mean * batches.loss_scale() : mean;
  };
  const auto evaluate = [&] {
    auto metrics = task_evaluate(*model, tuning, run.data, run.ranks.comm);
    if (trainable_numel <= kCompareLimit) {
      last_tensors.clear();
      for (const auto& [name, tensor] : tuning->trainable_parameters()) last_tensors.push_back(tensor.detach().clone());
      last_metrics = metrics;
    }
    return metrics;
  };
  const auto closing_evaluation = [&] {
    // 1: the last evaluation's tensors, 2: the best one's, 0: neither.
    const auto equal_to = [&](const auto& saved, auto tensor_of) {
      std::size_t i = 0;
      for (const auto& [name, tensor] : run.tuning->trainable_parameters())
        if (i >= saved.size() || !at::equal(tensor.detach(), tensor_of(saved[i++]))) return false;
      return i == saved.size();
    };
    std::int64_t which = 0;
    if (last_metrics && equal_to(last_tensors, [](const at::Tensor& t) { return t; }))
      which = 1;
    else if (best_metrics && equal_to(best.tensors, [](const NamedTensor& t) { return t.tensor; }))
      which = 2;
    if (auto* comm = run.ranks.comm) {  // reuse only what every rank reuses
      at::Tensor votes = at::zeros({2}, at::TensorOptions().dtype(at::kLong).device(comm->device()));
      if (which > 0) votes[which - 1].fill_(1);
      comm->all_reduce_sum(votes);
      const auto counts = votes.cpu();
      which = counts[0].item<std::int64_t>() == comm->world_size()   ? 1
              : counts[1].item<std::int64_t>() == comm->world_size() ? 2
                                                                     : 0;
    }
    if (which == 0) return task_evaluate(*model, tuning, run.data, run.ranks.comm);
    spdlog::info("{}: {} ends with the tensors of its {} evaluation; its dev metrics are the stage's", run.dir.name(),
                 pass.name, which == 1 ? "last" : "best");
    return which == 1 ? *last_metrics : *best_metrics;
  };

  spdlog::info("{}: {} ({} epochs, lr {}, on {})", run.dir.name(), pass.name, options.epochs, options.lr,
               model->device().str());
  const auto result = trainer.run(batches, loss, evaluate, on_best, resume ? &*resume : nullptr);
  if (result.stop_requested) checkpoints.stopped(result.steps, total);

  const nlohmann::json best_record = best_finish(run, pass, result, best, options.metric_for_best);
  const auto& path = pass.trainables;
  root_writes(run.ranks, "writing " + path.filename().string(), [&] { safetensors_save(path, trainables_of(run)); });
  nlohmann::json record = counts_of(run);
  if (!best_record.is_null()) record["best"] = best_record;
  record["dev"] = closing_evaluation();
  record["steps"] = result.steps;
  record["device"] = model->device().str();
  if (run.ranks.comm != nullptr) record["communicator"] = run.ranks.comm->backend();
  if (sync) record["allreduce_bytes_per_step"] = sync->bytes_per_step();
  record["skipped_steps"] = result.skipped_steps;
  record["seconds"] = seconds_since(start);
  return record;
}

void trainables_load(Run& run, Stage stage) { trainables_load_from(run, run.dir.trainables(stage)); }

void trainables_load_from(Run& run, const fs::path& path) {
  read_on_every_rank(run.ranks, path, "reading " + path.filename().string(), [&] {
    const auto file = SafetensorsCheckpoint::open(path);
    at::NoGradGuard no_grad;
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
      DSEE_CHECK(file.contains(name), "{}: tensor '{}' is missing; delete the run's stages/ to redo them",
                 path.string(), name);
      const auto saved = file.tensor(name);
      DSEE_CHECK(saved.sizes() == tensor.sizes(), "{}: tensor '{}' has shape {}, the run expects {}", path.string(),
                 name, shape_text(saved.sizes()), shape_text(tensor.sizes()));
      tensor.copy_(saved);
    }
  });
}

void stage_train(Run& run, Stage stage) {
  DSEE_ASSERT(stage == Stage::train || stage == Stage::retune, "no training stage '{}'", stage_name(stage));
  if (stage == Stage::retune && !run.recipe.retunes()) return;
  if (stage_finished(run, stage)) return trainables_load(run, stage);
  stage_required(run, stage);
  stage_record(run, stage, train_pass_run(run, train_pass_of(run, stage)));
}

}  // namespace dsee
