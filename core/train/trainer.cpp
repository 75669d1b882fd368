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
#include <optional>

#include "base/error.h"
#include "base/files.h"
#include "base/shape_text.h"
#include "core/train/losses.h"

namespace dsee {

namespace {

std::string duration_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

// Writes one JSON object per line, with "stage" when given, each line
// handed to the system at once so a killed run keeps its lines; a line the
// disk has no room for is an error and leaves the file as it was
// (base/files.h FileAppender).
class MetricsLog {
 public:
  MetricsLog(const std::filesystem::path& path, std::string stage) : stage_(std::move(stage)) {
    if (!path.empty()) file_.emplace(path);
  }
  void write(nlohmann::json record) {
    if (!stage_.empty()) record["stage"] = stage_;
    if (file_) file_->append(record.dump() + '\n');
  }
  // The file's length now; 0 without a file.
  std::int64_t bytes() const { return file_ ? file_->size() : 0; }

 private:
  std::string stage_;
  std::optional<FileAppender> file_;
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
// One call of Trainer::run: the loop's state and its named steps. run()
// strings them together; each member function is one phase of an optimizer
// step, in the order the step takes them.
class Trainer::Loop {
 public:
  Loop(Trainer& trainer, BatchSource& batches, const LossFunction& loss_of, const EvaluateFunction& evaluate,
       const std::function<void(std::int64_t)>& on_best, const TrainerProgress* resume)
      : t_(trainer),
        o_(trainer.options_),
        batches_(batches),
        loss_of_(loss_of),
        evaluate_(evaluate),
        on_best_(on_best),
        resume_(resume),
        total_(trainer.total_steps(batches)),
        schedule_(o_.lr, o_.schedule, total_),
        metrics_(metrics_open(o_, resume)),
        tty_(isatty(STDERR_FILENO) != 0),
        per_epoch_batches_(batches.batches_per_epoch()),
        steps_per_epoch_((per_epoch_batches_ + o_.grad_accumulation - 1) / o_.grad_accumulation) {}

  // Moves to `resume`'s position (the first epoch and sample, the schedule,
  // the best-metric bookkeeping). False when early stopping had already
  // ended the run there: nothing is left to do.
  bool resume_position() {
    if (resume_) {
      DSEE_CHECK(resume_->step >= 0 && resume_->step <= total_ && resume_->epoch >= 0 && resume_->sample_index >= 0,
                 "cannot resume at step {} (epoch {}, sample {}): this run has {} steps", resume_->step, resume_->epoch,
                 resume_->sample_index, total_);
      step_ = resume_->step;
      first_epoch_ = resume_->epoch;
      first_sample_ = resume_->sample_index;
      result_.skipped_steps = resume_->skipped_steps;
      result_.best_metric = resume_->best_metric;
      result_.best_step = resume_->best_step;
      evaluations_without_gain_ = resume_->evaluations_without_gain;
      schedule_.set_step(step_);
      if (patience_exhausted()) {
        result_.stopped_early = true;
        result_.steps = step_;
        return false;
      }
    }
    steps_at_start_ = step_;
    start_ = std::chrono::steady_clock::now();
    return true;
  }

  std::int64_t first_epoch() const { return first_epoch_; }
  bool steps_left() const { return step_ < total_; }
  std::int64_t step() const { return step_; }

  // Positions the batch source at `epoch` (mid-epoch on the resumed one);
  // returns the micro-batches the epoch has left.
  std::int64_t epoch_start(std::int64_t epoch) {
    std::int64_t batches_left = per_epoch_batches_;
    if (epoch == first_epoch_ && resume_) {
      const std::int64_t consumed = (step_ - epoch * steps_per_epoch_) * o_.grad_accumulation;
      DSEE_CHECK(consumed >= 0 && consumed < per_epoch_batches_,
                 "cannot resume at step {} in epoch {}: that epoch has {} steps of {} micro-batches", step_, epoch + 1,
                 steps_per_epoch_, o_.grad_accumulation);
      batches_.seek(epoch, first_sample_);
      batches_left -= consumed;
    } else {
      batches_.start_epoch(epoch);
    }
    return batches_left;
  }

  // One optimizer step's micro-batches: up to grad_accumulation of them,
  // fetched before the first forward (Note [Token-weighted accumulation]).
  // Sets `epoch_done` when the source or the epoch's count ends; empty when
  // the source ended the epoch on a step boundary.
  std::vector<TrainBatch> micro_batches_next(std::int64_t& batches_left, std::int64_t& in_step, bool& epoch_done) {
    in_step = std::min(o_.grad_accumulation, std::max<std::int64_t>(batches_left, 1));
    std::vector<TrainBatch> micro_batches;
    while (static_cast<std::int64_t>(micro_batches.size()) < in_step) {
      std::optional<TrainBatch> batch = batches_.next();
      if (!batch) {
        epoch_done = true;
        break;
      }
      micro_batches.push_back(std::move(*batch));
    }
    batches_left -= static_cast<std::int64_t>(micro_batches.size());
    if (!micro_batches.empty() && batches_left <= 0) epoch_done = true;
    return micro_batches;
  }

  // What each micro-batch's loss is divided by before backward: the step's
  // micro-batch count, or (causal LM) its target tokens per rank.
  double loss_divisor(const std::vector<TrainBatch>& micro_batches, std::int64_t in_step) {
    if (!o_.causal_lm) return static_cast<double>(in_step);
    std::int64_t tokens = 0;
    for (const auto& batch : micro_batches) tokens += causal_lm_target_count(lm_labels(batch));
    std::vector<double> counts = {static_cast<double>(tokens), 1.0};
    if (o_.sum_over_ranks) o_.sum_over_ranks(counts);  // Note [The loop on many ranks]
    DSEE_CHECK(counts[0] > 0,
               "causal LM training: the micro-batches of step {} hold no target token (every label after the "
               "first position is {}); check the data's completion masks",
               step_ + 1, kIgnoreLabel);
    return counts[0] / counts[1];  // tokens per rank: sync_gradients' mean is the global token mean
  }

  struct StepLoss {
    double loss = 0;
    std::int64_t samples = 0;
  };

  // Forward and backward of every micro-batch into fresh gradients, the
  // ranks' sums (global loss and samples) and the gradient average.
  StepLoss forward_backward(const std::vector<TrainBatch>& micro_batches, double divisor) {
    double loss_sum = 0;
    std::int64_t samples = 0;
    t_.optimizer_.zero_grad();
    for (const auto& batch : micro_batches) {
      at::Tensor loss = loss_of_(batch);
      if (o_.causal_lm) {
        DSEE_CHECK(loss.defined(),
                   "causal LM training: the loss function must return logits [batch, seq, vocab], "
                   "got an undefined tensor");
        const at::Tensor& labels = lm_labels(batch);
        loss = causal_lm_loss(loss, labels.to(loss.device()), o_.label_smoothing, LossReduction::sum);
      }
      DSEE_CHECK(loss.defined() && loss.numel() == 1, "the loss function must return one value, got {}",
                 loss.defined() ? fmt::format("{}", shape_text(loss.sizes())) : std::string("an undefined tensor"));
      (loss / divisor).backward();
      loss_sum += o_.causal_lm ? loss.item<double>() / divisor : loss.item<double>();
      samples += batch.samples;
    }
    if (o_.sum_over_ranks) {  // Note [The loop on many ranks]
      std::vector<double> sums = {loss_sum, static_cast<double>(samples), 1.0};
      o_.sum_over_ranks(sums);
      loss_sum = sums[0] / sums[2];  // sums[2]: the number of ranks
      samples = static_cast<std::int64_t>(sums[1]);
    }
    if (o_.sync_gradients) o_.sync_gradients();
    const auto micro = static_cast<double>(micro_batches.size());
    return {o_.causal_lm ? loss_sum : loss_sum / micro, samples};
  }

  // Clipping, the non-finite guard (Note [The non-finite guard]) and the
  // AdamW update at the schedule's rate; the step counts as taken either way.
  void update(const StepLoss& step_loss, std::int64_t epoch) {
    const double loss = step_loss.loss;
    const double norm = grad_clip_norm(t_.parameters_, o_.max_grad_norm);
    const double lr = schedule_.lr();
    ++step_;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      DSEE_CHECK(o_.skip_nonfinite,
                 "non-finite training at step {} of {} (loss {}, gradient norm {}): lower the learning rate, "
                 "check the data, or set train.skip_nonfinite = true to skip such steps",
                 step_, total_, loss, norm);
      t_.optimizer_.zero_grad();
      ++result_.skipped_steps;
      spdlog::warn("step {}: non-finite loss {} or gradient norm {}; step skipped (skipped {} of {} steps so far)",
                   step_, loss, norm, result_.skipped_steps, step_);
    } else {
      t_.optimizer_.step(lr);
    }
    schedule_.advance();
    samples_total_ += step_loss.samples;
    if (o_.after_step) o_.after_step(step_);
    report(epoch, loss, lr, norm);
  }

  // Evaluates when due (eval_every, an epoch's end, the last step), then
  // decides whether the loop ends here (early stopping, a stop request).
  void evaluate_and_decide(std::int64_t epoch, bool epoch_done) {
    const bool eval_now = (o_.eval_every > 0 && step_ % o_.eval_every == 0) || epoch_done || step_ == total_;
    if (eval_now) evaluation(epoch);
    if (patience_exhausted()) {
      spdlog::info("early stopping at step {}: {} evaluations without a better {}", step_, evaluations_without_gain_,
                   o_.metric_for_best);
      result_.stopped_early = true;
    } else if (o_.should_stop && o_.should_stop()) {
      spdlog::info("stop requested at step {}", step_);
      result_.stopped_early = true;
      result_.stop_requested = true;
    }
  }

  // The periodic checkpoint, and the one a stop request asks for.
  void checkpoint_if_due(std::int64_t epoch, bool epoch_done) {
    if (!o_.on_checkpoint) return;
    const bool due = o_.checkpoint_every > 0 ? step_ % o_.checkpoint_every == 0 : epoch_done;
    if (due || (result_.stop_requested && o_.checkpoint_on_stop)) o_.on_checkpoint(progress_at(epoch, epoch_done));
  }

  bool stopped() const { return result_.stopped_early; }
  const TrainResult& result() const { return result_; }

  TrainResult finish() {
    if (tty_ && o_.progress) std::fputc('\n', stderr);
    result_.steps = step_;
    if (result_.skipped_steps > 0)
      spdlog::warn("{} of {} steps were skipped for a non-finite loss or gradient norm", result_.skipped_steps, step_);
    return result_;
  }

 private:
  static MetricsLog metrics_open(const TrainerOptions& o, const TrainerProgress* resume) {
    if (resume) {
      metrics_truncate(o.metrics_path, resume->metrics_bytes);
    } else {
      metrics_drop_stage(o.metrics_path, o.metrics_stage);
    }
    return MetricsLog(o.metrics_path, o.metrics_stage);
  }

  bool patience_exhausted() const {
    return o_.early_stopping_patience > 0 && evaluations_without_gain_ >= o_.early_stopping_patience;
  }

  // The progress line (in place on a terminal, every log_every steps
  // otherwise) and the step's metrics record.
  void report(std::int64_t epoch, double loss, double lr, double norm) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(samples_total_) / elapsed : 0;
    const double eta = elapsed / static_cast<double>(step_ - steps_at_start_) * static_cast<double>(total_ - step_);
    const std::string line = fmt::format("step {}/{} epoch {} loss {:.4f} lr {:.3e} |g| {:.3f} {:.1f} samples/s ETA {}",
                                         step_, total_, epoch + 1, loss, lr, norm, rate, duration_text(eta));
    if (tty_ && o_.progress) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
    } else if (o_.log_every > 0 && (step_ % o_.log_every == 0 || step_ == total_)) {
      spdlog::info("{}", line);
    }
    metrics_.write({{"kind", "train"},
                    {"step", step_},
                    {"epoch", epoch},
                    {"loss", loss},
                    {"lr", lr},
                    {"grad_norm", std::isfinite(norm) ? nlohmann::json(norm) : nullptr}});
  }

  // One evaluation: its metrics record, and the best-metric bookkeeping.
  void evaluation(std::int64_t epoch) {
    if (!evaluate_) return;
    const std::map<std::string, double> values = evaluate_();
    nlohmann::json record = {{"kind", "eval"}, {"step", step_}, {"epoch", epoch}};
    for (const auto& [name, value] : values) record[name] = std::isfinite(value) ? nlohmann::json(value) : nullptr;
    metrics_.write(record);
    if (tty_ && o_.progress) std::fputc('\n', stderr);
    spdlog::info("eval step {}/{}: {}", step_, total_, record.dump());
    if (o_.metric_for_best.empty()) return;
    const auto it = values.find(o_.metric_for_best);
    if (it == values.end()) {
      std::vector<std::string> names;
      for (const auto& [name, value] : values) names.push_back(name);
      throw Error(fmt::format("metric_for_best '{}' is not among the evaluation's metrics ({})", o_.metric_for_best,
                              fmt::join(names, ", ")));
    }
    const double value = it->second;
    const bool better =
        std::isfinite(value) &&
        (!result_.best_metric || (o_.greater_is_better ? value > *result_.best_metric : value < *result_.best_metric));
    if (better) {
      result_.best_metric = value;
      result_.best_step = step_;
      evaluations_without_gain_ = 0;
      if (on_best_) on_best_(step_);
    } else {
      ++evaluations_without_gain_;
    }
  }

  TrainerProgress progress_at(std::int64_t epoch, bool epoch_done) const {
    TrainerProgress p;
    p.step = step_;
    p.epoch = epoch_done ? epoch + 1 : epoch;
    p.sample_index = epoch_done ? 0 : batches_.sample_index();
    p.skipped_steps = result_.skipped_steps;
    p.best_metric = result_.best_metric;
    p.best_step = result_.best_step;
    p.evaluations_without_gain = evaluations_without_gain_;
    p.metrics_bytes = metrics_.bytes();
    return p;
  }

  Trainer& t_;
  const TrainerOptions& o_;
  BatchSource& batches_;
  const LossFunction& loss_of_;
  const EvaluateFunction& evaluate_;
  const std::function<void(std::int64_t)>& on_best_;
  const TrainerProgress* resume_;
  const std::int64_t total_;
  LrSchedule schedule_;
  MetricsLog metrics_;
  const bool tty_;
  const std::int64_t per_epoch_batches_;
  const std::int64_t steps_per_epoch_;
  TrainResult result_;
  std::int64_t evaluations_without_gain_ = 0;
  std::int64_t samples_total_ = 0;
  std::int64_t step_ = 0, first_epoch_ = 0, first_sample_ = 0, steps_at_start_ = 0;
  std::chrono::steady_clock::time_point start_;
};

TrainResult Trainer::run(BatchSource& batches, const LossFunction& loss_of, const EvaluateFunction& evaluate,
                         const std::function<void(std::int64_t)>& on_best, const TrainerProgress* resume) {
  Loop loop(*this, batches, loss_of, evaluate, on_best, resume);
  if (!loop.resume_position()) return loop.result();  // early stopping had ended the run at the checkpoint
  for (std::int64_t epoch = loop.first_epoch(); loop.steps_left(); ++epoch) {
    std::int64_t batches_left = loop.epoch_start(epoch);
    const std::int64_t steps_before = loop.step();
    bool epoch_done = false;
    while (!epoch_done && loop.steps_left()) {
      std::int64_t in_step = 0;
      const std::vector<TrainBatch> micro_batches = loop.micro_batches_next(batches_left, in_step, epoch_done);
      if (micro_batches.empty()) break;  // the source ended the epoch on a step boundary
      const double divisor = loop.loss_divisor(micro_batches, in_step);
      loop.update(loop.forward_backward(micro_batches, divisor), epoch);
      loop.evaluate_and_decide(epoch, epoch_done);
      loop.checkpoint_if_due(epoch, epoch_done);
      if (loop.stopped()) return loop.finish();
    }
    DSEE_CHECK(loop.step() > steps_before, "epoch {} of the training set yielded no batches", epoch + 1);
  }
  return loop.finish();
}

}  // namespace dsee
