// The training loop (see trainer.h). One pass over micro-batches; the
// optimizer step, the non-finite guard, evaluation and logging hang off the
// step boundary, which is also the only place the loop may stop.
#include "core/train/trainer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "base/error.h"
#include "base/shape_text.h"
#include "core/train/losses.h"

namespace dsee {

namespace {

std::string duration_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

// Writes one JSON object per line, with "stage" when given; flushes so a
// killed run keeps its lines.
class MetricsLog {
 public:
  MetricsLog(const std::filesystem::path& path, std::string stage) : path_(path), stage_(std::move(stage)) {
    if (path.empty()) return;
    file_.open(path, std::ios::app);
    DSEE_CHECK(file_, "cannot open metrics file '{}' for appending", path.string());
  }
  void write(nlohmann::json record) {
    if (!stage_.empty()) record["stage"] = stage_;
    if (file_.is_open()) file_ << record.dump() << '\n' << std::flush;
  }
  // The file's length now (every line is flushed); 0 without a file.
  std::int64_t bytes() const {
    return file_.is_open() ? static_cast<std::int64_t>(std::filesystem::file_size(path_)) : 0;
  }

 private:
  std::filesystem::path path_;
  std::string stage_;
  std::ofstream file_;
};

// Cuts metrics.jsonl back to what it held at a checkpoint (Note [Resuming]).
void metrics_truncate(const std::filesystem::path& path, std::int64_t bytes) {
  if (path.empty()) return;
  const bool exists = std::filesystem::exists(path);
  const auto size = exists ? static_cast<std::int64_t>(std::filesystem::file_size(path)) : 0;
  DSEE_CHECK(size >= bytes,
             "cannot resume: '{}' holds {} bytes but the checkpoint recorded {}; it was truncated or replaced "
             "since, restore it or start the run over",
             path.string(), size, bytes);
  if (exists && size > bytes) std::filesystem::resize_file(path, static_cast<std::uintmax_t>(bytes));
}

// A fresh start of `stage`: drops metrics.jsonl's lines from the stage's
// first record on (Note [Resuming]). Lines that are not JSON (a line torn by
// a kill) are passed over.
void metrics_drop_stage(const std::filesystem::path& path, const std::string& stage) {
  if (path.empty() || stage.empty() || !std::filesystem::exists(path)) return;
  std::ifstream in(path, std::ios::binary);
  DSEE_CHECK(in, "cannot read metrics file '{}'", path.string());
  std::int64_t offset = 0;
  for (std::string line; std::getline(in, line); offset += static_cast<std::int64_t>(line.size()) + 1) {
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object()) continue;
    const auto it = record.find("stage");
    if (it == record.end() || !it->is_string() || it->get<std::string>() != stage) continue;
    in.close();
    const auto size = static_cast<std::int64_t>(std::filesystem::file_size(path));
    spdlog::info(
        "{}: {} starts afresh (no checkpoint to resume from); dropping the {} bytes an earlier attempt "
        "wrote from byte {} on",
        path.filename().string(), stage, size - offset, offset);
    std::filesystem::resize_file(path, static_cast<std::uintmax_t>(offset));
    return;
  }
}

// The "labels" of a causal LM micro-batch.
const at::Tensor& lm_labels(const TrainBatch& batch) {
  const auto it = batch.tensors.find("labels");
  DSEE_CHECK(it != batch.tensors.end(), "causal LM training: a micro-batch has no \"labels\" tensor [batch, seq]");
  return it->second;
}

}  // namespace

Trainer::Trainer(NamedTensors parameters, TrainerOptions options)
    : parameters_(parameters), options_(std::move(options)), optimizer_(std::move(parameters), options_.adamw) {
  DSEE_CHECK(options_.grad_accumulation >= 1, "train.grad_accumulation must be >= 1, got {}",
             options_.grad_accumulation);
  DSEE_CHECK(options_.max_steps > 0 || options_.epochs > 0,
             "set train.epochs or train.max_steps to a positive number (got {} and {})", options_.epochs,
             options_.max_steps);
  DSEE_CHECK(options_.max_grad_norm >= 0, "train.max_grad_norm must be >= 0, got {}", options_.max_grad_norm);
  DSEE_CHECK(options_.early_stopping_patience == 0 || !options_.metric_for_best.empty(),
             "early stopping needs a metric to watch: set metric_for_best");
  DSEE_CHECK(options_.label_smoothing >= 0 && options_.label_smoothing <= 1,
             "label smoothing must lie in [0, 1], got {}", options_.label_smoothing);
  DSEE_CHECK(options_.label_smoothing == 0 || options_.causal_lm,
             "label smoothing ({}) applies to causal LM training only (TrainerOptions::causal_lm); the "
             "classification and regression losses take none",
             options_.label_smoothing);
}

std::int64_t Trainer::total_steps(const BatchSource& batches) const {
  if (options_.max_steps > 0) return options_.max_steps;
  const std::int64_t per_epoch =
      (batches.batches_per_epoch() + options_.grad_accumulation - 1) / options_.grad_accumulation;
  DSEE_CHECK(per_epoch > 0, "the training set yields no batches");
  return per_epoch * options_.epochs;
}

// Note [The non-finite guard]
// After the micro-batches of a step we know the summed loss and the global
// gradient norm (computed anyway for clipping; one host sync per step). If
// either is NaN or ±inf the update would poison the parameters and AdamW's
// moments for good. Default: stop with an error naming the step, so the user
// can lower the learning rate or inspect the data. With skip_nonfinite the
// gradients are dropped and the step counts as taken (the schedule moves on,
// so the total stays as planned); the moments are untouched. Each skip is
// logged with the running count ("skipped N of M steps so far") and the run
// ends with the total, so a run that skipped much is visible in its log.
// Note [Token-weighted accumulation]
// For classification every micro-batch's mean loss counts alike (a mean of
// means). For language modelling the examples differ in how many completion
// tokens they hold, and the loss the user means is the mean over the tokens
// of the whole step: transformers' Trainer counts the step's target tokens
// first (num_items_in_batch, summed over ranks too) and backpropagates each
// micro-batch's summed loss divided by that count. So does this loop with
// causal_lm: it fetches the step's micro-batches before the first forward,
// counts labels[:, 1:] != -100 (causal_lm_target_count), backpropagates
// causal_lm_loss(logits, labels, label_smoothing, sum) / count, and reports
// the sum of those as the step's loss. Under data parallelism the count is
// summed over the ranks (one more sum_over_ranks, before the micro-steps)
// and each rank divides by count / ranks, so that sync_gradients' mean is the
// global token mean. A step whose micro-batches hold no target token is an
// error (0/0): the data's completion masks are wrong.
// Note [The loop on many ranks]
// Under data parallelism every rank runs this loop over its piece of each
// global micro-batch, and every rank must take the same branches at the same
// step, or a collective is left waiting. What makes the branches agree:
//  - steps per epoch come from the global batch count (batches_per_epoch is
//    the same on every rank);
//  - after the micro-batches, sum_over_ranks turns each rank's loss into the
//    global mean (the loss function scaled it so that the mean over ranks is
//    the global mean) and the samples into the global count, and
//    sync_gradients averages the gradients, so the non-finite guard, the
//    clipping norm and AdamW see the same numbers on every rank;
//  - evaluation is the caller's (a sharded evaluation gathers predictions,
//    so every rank gets the same metrics and early stopping agrees);
//  - should_stop must itself be a collective (stop_requested_on_any_rank).
// Micro-steps issue no collective; each step issues sum_over_ranks, then
// sync_gradients, then whatever after_step, evaluate and should_stop issue
// (causal_lm adds one sum_over_ranks before the micro-steps: the step's
// token count, Note [Token-weighted accumulation]).
// Note [Resuming]
// A checkpoint is taken at a step boundary, after that step's evaluation and
// stop checks, so resuming continues with the next micro-batch exactly as the
// straight run would: the schedule is set to the step, the batch source
// seeks to (epoch, sample_index), the best-metric bookkeeping comes back, and
// metrics.jsonl is cut to its length at the checkpoint (lines the
// interrupted process wrote after it are written again). The caller restores
// the parameters, AdamW's state and the RNG states (dropout), so the
// continuation is bit-identical on the CPU. metrics.jsonl records hold no
// wall-clock values for the same reason (samples/s is only in the progress
// line). Within an epoch the micro-batches consumed are (steps taken in the
// epoch) × grad_accumulation: only the last step of an epoch holds fewer,
// and a checkpoint there records the next epoch's start.
// A stage killed before its first checkpoint (SIGKILL, out of memory, or no
// checkpoint on signals) starts afresh on the next run, and the lines it had
// written would be written again. So every record carries the stage's name
// (metrics_stage) and a fresh start first cuts the file where that stage's
// first record begins (with whatever followed it): the file then equals a
// straight run's byte for byte.
TrainResult Trainer::run(BatchSource& batches, const LossFunction& loss_of, const EvaluateFunction& evaluate,
                         const std::function<void(std::int64_t)>& on_best, const TrainerProgress* resume) {
  const std::int64_t total = total_steps(batches);
  LrSchedule schedule(options_.lr, options_.schedule, total);
  if (resume) {
    metrics_truncate(options_.metrics_path, resume->metrics_bytes);
  } else {
    metrics_drop_stage(options_.metrics_path, options_.metrics_stage);
  }
  MetricsLog metrics(options_.metrics_path, options_.metrics_stage);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const std::int64_t per_epoch_batches = batches.batches_per_epoch();
  const std::int64_t steps_per_epoch =
      (per_epoch_batches + options_.grad_accumulation - 1) / options_.grad_accumulation;
  TrainResult result;
  std::int64_t evaluations_without_gain = 0;
  std::int64_t samples_total = 0;
  std::int64_t step = 0, first_epoch = 0, first_sample = 0;
  if (resume) {
    DSEE_CHECK(resume->step >= 0 && resume->step <= total && resume->epoch >= 0 && resume->sample_index >= 0,
               "cannot resume at step {} (epoch {}, sample {}): this run has {} steps", resume->step, resume->epoch,
               resume->sample_index, total);
    step = resume->step;
    first_epoch = resume->epoch;
    first_sample = resume->sample_index;
    result.skipped_steps = resume->skipped_steps;
    result.best_metric = resume->best_metric;
    result.best_step = resume->best_step;
    evaluations_without_gain = resume->evaluations_without_gain;
    schedule.set_step(step);
    if (options_.early_stopping_patience > 0 && evaluations_without_gain >= options_.early_stopping_patience) {
      result.stopped_early = true;
      result.steps = step;
      return result;
    }
  }
  const std::int64_t steps_at_start = step;
  const auto start = std::chrono::steady_clock::now();

  auto progress_at = [&](std::int64_t epoch, bool epoch_done) {
    TrainerProgress p;
    p.step = step;
    p.epoch = epoch_done ? epoch + 1 : epoch;
    p.sample_index = epoch_done ? 0 : batches.sample_index();
    p.skipped_steps = result.skipped_steps;
    p.best_metric = result.best_metric;
    p.best_step = result.best_step;
    p.evaluations_without_gain = evaluations_without_gain;
    p.metrics_bytes = metrics.bytes();
    return p;
  };

  auto run_evaluation = [&](std::int64_t step, std::int64_t epoch) {
    if (!evaluate) return;
    const std::map<std::string, double> values = evaluate();
    nlohmann::json record = {{"kind", "eval"}, {"step", step}, {"epoch", epoch}};
    for (const auto& [name, value] : values) record[name] = std::isfinite(value) ? nlohmann::json(value) : nullptr;
    metrics.write(record);
    if (tty && options_.progress) std::fputc('\n', stderr);
    spdlog::info("eval step {}/{}: {}", step, total, record.dump());
    if (options_.metric_for_best.empty()) return;
    const auto it = values.find(options_.metric_for_best);
    if (it == values.end()) {
      std::vector<std::string> names;
      for (const auto& [name, value] : values) names.push_back(name);
      throw Error(fmt::format("metric_for_best '{}' is not among the evaluation's metrics ({})",
                              options_.metric_for_best, fmt::join(names, ", ")));
    }
    const double value = it->second;
    const bool better = std::isfinite(value) &&
                        (!result.best_metric ||
                         (options_.greater_is_better ? value > *result.best_metric : value < *result.best_metric));
    if (better) {
      result.best_metric = value;
      result.best_step = step;
      evaluations_without_gain = 0;
      if (on_best) on_best(step);
    } else {
      ++evaluations_without_gain;
    }
  };

  auto finish = [&] {
    if (tty && options_.progress) std::fputc('\n', stderr);
    result.steps = step;
    if (result.skipped_steps > 0)
      spdlog::warn("{} of {} steps were skipped for a non-finite loss or gradient norm", result.skipped_steps, step);
    return result;
  };

  for (std::int64_t epoch = first_epoch; step < total; ++epoch) {
    std::int64_t batches_left = per_epoch_batches;
    if (epoch == first_epoch && resume) {
      const std::int64_t consumed = (step - epoch * steps_per_epoch) * options_.grad_accumulation;
      DSEE_CHECK(consumed >= 0 && consumed < per_epoch_batches,
                 "cannot resume at step {} in epoch {}: that epoch has {} steps of {} micro-batches", step, epoch + 1,
                 steps_per_epoch, options_.grad_accumulation);
      batches.seek(epoch, first_sample);
      batches_left -= consumed;
    } else {
      batches.start_epoch(epoch);
    }
    const std::int64_t steps_before = step;
    bool epoch_done = false;
    while (!epoch_done && step < total) {
      // One optimizer step: up to grad_accumulation micro-batches.
      const std::int64_t in_step = std::min(options_.grad_accumulation, std::max<std::int64_t>(batches_left, 1));
      std::vector<TrainBatch> micro_batches;  // fetched first (Note [Token-weighted accumulation])
      while (static_cast<std::int64_t>(micro_batches.size()) < in_step) {
        std::optional<TrainBatch> batch = batches.next();
        if (!batch) {
          epoch_done = true;
          break;
        }
        micro_batches.push_back(std::move(*batch));
      }
      const auto micro = static_cast<std::int64_t>(micro_batches.size());
      batches_left -= micro;
      if (micro == 0) break;  // the source ended the epoch on a step boundary
      if (batches_left <= 0) epoch_done = true;
      // What each micro-batch's loss is divided by before backward.
      double divisor = static_cast<double>(in_step);
      if (options_.causal_lm) {
        std::int64_t tokens = 0;
        for (const auto& batch : micro_batches) tokens += causal_lm_target_count(lm_labels(batch));
        std::vector<double> counts = {static_cast<double>(tokens), 1.0};
        if (options_.sum_over_ranks) options_.sum_over_ranks(counts);  // Note [The loop on many ranks]
        DSEE_CHECK(counts[0] > 0,
                   "causal LM training: the micro-batches of step {} hold no target token (every label after the "
                   "first position is {}); check the data's completion masks",
                   step + 1, kIgnoreLabel);
        divisor = counts[0] / counts[1];  // tokens per rank: sync_gradients' mean is the global token mean
      }
      double loss_sum = 0;
      std::int64_t samples = 0;
      optimizer_.zero_grad();
      for (const auto& batch : micro_batches) {
        at::Tensor loss = loss_of(batch);
        if (options_.causal_lm) {
          DSEE_CHECK(loss.defined(),
                     "causal LM training: the loss function must return logits [batch, seq, vocab], "
                     "got an undefined tensor");
          const at::Tensor& labels = lm_labels(batch);
          loss = causal_lm_loss(loss, labels.to(loss.device()), options_.label_smoothing, LossReduction::sum);
        }
        DSEE_CHECK(loss.defined() && loss.numel() == 1, "the loss function must return one value, got {}",
                   loss.defined() ? fmt::format("{}", shape_text(loss.sizes())) : std::string("an undefined tensor"));
        (loss / divisor).backward();
        loss_sum += options_.causal_lm ? loss.item<double>() / divisor : loss.item<double>();
        samples += batch.samples;
      }
      if (options_.sum_over_ranks) {  // Note [The loop on many ranks]
        std::vector<double> sums = {loss_sum, static_cast<double>(samples), 1.0};
        options_.sum_over_ranks(sums);
        loss_sum = sums[0] / sums[2];  // sums[2]: the number of ranks
        samples = static_cast<std::int64_t>(sums[1]);
      }
      if (options_.sync_gradients) options_.sync_gradients();
      const double loss = options_.causal_lm ? loss_sum : loss_sum / static_cast<double>(micro);
      const double norm = grad_clip_norm(parameters_, options_.max_grad_norm);
      const double lr = schedule.lr();
      ++step;
      if (!std::isfinite(loss) || !std::isfinite(norm)) {
        DSEE_CHECK(options_.skip_nonfinite,
                   "non-finite training at step {} of {} (loss {}, gradient norm {}): lower the learning rate, "
                   "check the data, or set train.skip_nonfinite = true to skip such steps",
                   step, total, loss, norm);
        optimizer_.zero_grad();
        ++result.skipped_steps;
        spdlog::warn("step {}: non-finite loss {} or gradient norm {}; step skipped (skipped {} of {} steps so far)",
                     step, loss, norm, result.skipped_steps, step);
      } else {
        optimizer_.step(lr);
      }
      schedule.advance();
      samples_total += samples;
      if (options_.after_step) options_.after_step(step);

      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = elapsed > 0 ? static_cast<double>(samples_total) / elapsed : 0;
      const double eta = elapsed / static_cast<double>(step - steps_at_start) * static_cast<double>(total - step);
      const std::string line =
          fmt::format("step {}/{} epoch {} loss {:.4f} lr {:.3e} |g| {:.3f} {:.1f} samples/s ETA {}", step, total,
                      epoch + 1, loss, lr, norm, rate, duration_text(eta));
      if (tty && options_.progress) {
        std::fprintf(stderr, "\r%s\033[K", line.c_str());
      } else if (options_.log_every > 0 && (step % options_.log_every == 0 || step == total)) {
        spdlog::info("{}", line);
      }
      metrics.write({{"kind", "train"},
                     {"step", step},
                     {"epoch", epoch},
                     {"loss", loss},
                     {"lr", lr},
                     {"grad_norm", std::isfinite(norm) ? nlohmann::json(norm) : nullptr}});

      const bool eval_now = (options_.eval_every > 0 && step % options_.eval_every == 0) || epoch_done || step == total;
      if (eval_now) run_evaluation(step, epoch);
      if (options_.early_stopping_patience > 0 && evaluations_without_gain >= options_.early_stopping_patience) {
        spdlog::info("early stopping at step {}: {} evaluations without a better {}", step, evaluations_without_gain,
                     options_.metric_for_best);
        result.stopped_early = true;
      } else if (options_.should_stop && options_.should_stop()) {
        spdlog::info("stop requested at step {}", step);
        result.stopped_early = true;
        result.stop_requested = true;
      }
      if (options_.on_checkpoint) {
        const bool due = options_.checkpoint_every > 0 ? step % options_.checkpoint_every == 0 : epoch_done;
        if (due || (result.stop_requested && options_.checkpoint_on_stop))
          options_.on_checkpoint(progress_at(epoch, epoch_done));
      }
      if (result.stopped_early) return finish();
    }
    DSEE_CHECK(step > steps_before, "epoch {} of the training set yielded no batches", epoch + 1);
  }
  return finish();
}

}  // namespace dsee
