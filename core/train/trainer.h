// The training loop: epochs or steps of micro-batches with gradient
// accumulation, global-norm clipping, AdamW on a schedule, a non-finite
// guard, evaluation every N steps and at epoch ends with best-metric
// tracking and early stopping, a progress line and metrics.jsonl. It knows nothing about models
// or data: the caller hands it the trainable tensors (ModelTuning::
// trainable_parameters()), a source of batches and a loss function.
//
// One optimizer step = `grad_accumulation` micro-batches; each micro-batch's
// loss is divided by the number of micro-batches in its step before
// backward (a mean of means; the last step of an epoch may hold fewer).
// Causal LM training (`causal_lm`) weighs tokens instead: the step's loss is
// the summed loss of the counted target tokens of all its micro-batches
// divided by their number (Note [Token-weighted accumulation]).
// Steps per epoch = ceil(batches_per_epoch / grad_accumulation).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/train/lr_schedule.h"
#include "core/train/optimizer.h"
#include "core/tuning/tuning.h"

namespace dsee {

// A micro-batch: named tensors ([batch, seq] ids, masks, labels...) and the
// number of examples in it (for samples/s).
struct TrainBatch {
  std::map<std::string, at::Tensor> tensors;
  std::int64_t samples = 0;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual std::int64_t batches_per_epoch() const = 0;
  // Called before each epoch (0-based): reshuffle here.
  virtual void start_epoch(std::int64_t epoch) = 0;
  // The next micro-batch of the epoch; nullopt when the epoch is over.
  virtual std::optional<TrainBatch> next() = 0;
  // Resuming (checkpoints): the global samples of the current epoch consumed
  // so far (all ranks together, so a position resumes on any rank count) and
  // seek = start_epoch(epoch) then skip `sample_index` global samples.
  virtual std::int64_t sample_index() const = 0;
  virtual void seek(std::int64_t epoch, std::int64_t sample_index) = 0;
};

// Where a run stands at a step boundary: what a checkpoint must hold besides
// the trainable tensors, the optimizer state (AdamW::state_export) and the
// RNG states, to continue bit-exactly. At the end of an epoch the position
// is (epoch + 1, 0).
struct TrainerProgress {
  std::int64_t step = 0;          // optimizer steps taken (the schedule's step)
  std::int64_t epoch = 0;         // 0-based epoch the next micro-batch belongs to
  std::int64_t sample_index = 0;  // global samples of `epoch` consumed (BatchSource::sample_index)
  std::int64_t skipped_steps = 0;
  std::optional<double> best_metric;
  std::int64_t best_step = -1;
  std::int64_t evaluations_without_gain = 0;
  std::int64_t metrics_bytes = 0;  // length of metrics.jsonl at this boundary; truncated back to it on resume
};

// Forward + loss of one micro-batch: a 0-dim float tensor with autograd
// history. With TrainerOptions::causal_lm, the forward alone: the model's
// logits [batch, seq, vocab] (the trainer takes the loss).
using LossFunction = std::function<at::Tensor(const TrainBatch&)>;
// Evaluates on the dev set: metric name -> value.
using EvaluateFunction = std::function<std::map<std::string, double>()>;

struct TrainerOptions {
  std::int64_t epochs = 1;     // used when max_steps is 0
  std::int64_t max_steps = 0;  // > 0: stop after this many optimizer steps
  std::int64_t grad_accumulation = 1;
  double lr = 2e-4;
  AdamWOptions adamw;
  LrScheduleOptions schedule;
  double max_grad_norm = 0.0;   // 0: no clipping
  bool skip_nonfinite = false;  // train.skip_nonfinite: skip the step instead of stopping (counted in the log)
  // Language modelling: the loss function returns logits [batch, seq, vocab], every micro-batch holds
  // "labels" int64 [batch, seq] (kIgnoreLabel on context and padding), and the step's loss is
  // causal_lm_loss(label_smoothing) summed over the step's counted tokens (all micro-batches, all
  // ranks) and divided by their number, as transformers' Trainer with num_items_in_batch.
  bool causal_lm = false;
  double label_smoothing = 0.0;  // causal_lm only; in [0, 1]
  std::int64_t eval_every = 0;   // optimizer steps; epoch ends are always evaluated (once per step)
  std::string metric_for_best;   // empty: no best tracking
  bool greater_is_better = true;
  std::int64_t early_stopping_patience = 0;  // evaluations without improvement; 0: off
  std::int64_t log_every = 10;               // steps between progress lines when stderr is no TTY
  std::filesystem::path metrics_path;        // metrics.jsonl (appended); empty: none
  // Written as "stage" into every metrics record. A fresh start (run without `resume`) first drops the
  // file's lines from this stage's first record on: what a stage killed before its first checkpoint
  // wrote (Note [Resuming]). Empty: no field, nothing dropped.
  std::string metrics_stage;
  std::function<bool()> should_stop;  // polled between steps (stop signals); may be empty

  // Data parallelism (Note [The loop on many ranks] in trainer.cpp); all empty: one process.
  // Averages the trainable gradients over the ranks: called on every rank once per optimizer step,
  // after the step's last micro-batch backward, before the non-finite check and clipping.
  std::function<void()> sync_gradients;
  // Sums a few doubles over the ranks in place (a collective, once per step). With ranks, each rank's
  // loss function returns its loss scaled so that the mean over ranks is the global mean.
  std::function<void(std::vector<double>&)> sum_over_ranks;
  // Called on every rank after each optimizer step (taken or skipped), before evaluation.
  std::function<void(std::int64_t step)> after_step;
  bool progress = true;  // the progress line on stderr (false on ranks other than 0)
  // Checkpoint hook (may be empty): called at a step boundary every
  // `checkpoint_every` optimizer steps (0: at the end of each epoch), and
  // when the loop stops because should_stop() returned true. Parameters and
  // optimizer state are those after the step; metrics.jsonl is flushed.
  std::int64_t checkpoint_every = 0;
  std::function<void(const TrainerProgress&)> on_checkpoint;
  // false: a should_stop() stop calls on_checkpoint only when a periodic
  // checkpoint is due at that step anyway (run.checkpoint_on_signal = false).
  bool checkpoint_on_stop = true;
};

struct TrainResult {
  std::int64_t steps = 0;          // optimizer steps taken (skipped ones included)
  std::int64_t skipped_steps = 0;  // non-finite steps skipped
  std::optional<double> best_metric;
  std::int64_t best_step = -1;
  bool stopped_early = false;   // early stopping or should_stop
  bool stop_requested = false;  // should_stop() returned true (the loop did not finish)
};

class Trainer {
 public:
  // dsee::Error on bad options (grad_accumulation < 1, both or neither of epochs/max_steps, ...).
  Trainer(NamedTensors parameters, TrainerOptions options);

  // `on_best` (may be empty) runs right after an evaluation that improves
  // metric_for_best (save the best checkpoint there). A non-finite loss or
  // gradient norm throws dsee::Error naming the step unless skip_nonfinite.
  // With `resume`, the loop continues from that progress: the schedule and
  // the batch source move to its position, metrics.jsonl is cut back to its
  // length; the caller has restored parameters, optimizer() state and RNGs.
  // Without it, metrics.jsonl loses the lines of an earlier metrics_stage.
  TrainResult run(BatchSource& batches, const LossFunction& loss, const EvaluateFunction& evaluate = {},
                  const std::function<void(std::int64_t step)>& on_best = {}, const TrainerProgress* resume = nullptr);

  std::int64_t total_steps(const BatchSource& batches) const;
  AdamW& optimizer() { return optimizer_; }

 private:
  class Loop;  // one run(): its state and named steps (trainer.cpp)
  NamedTensors parameters_;
  TrainerOptions options_;
  AdamW optimizer_;
};

}  // namespace dsee
