// The training loop on a tiny linear regression: step counts, gradient
// accumulation equal to one large batch, the non-finite guard (stop naming
// the step, or skip), evaluation, best tracking, early stopping, metrics.jsonl;
// below, a stage restarted without a checkpoint, non-finite gradients,
// evaluation at epoch ends and causal LM accumulation.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "error_of.h"
#include "run_dsee.h"

namespace dsee {
namespace {

// y = x·w_true; `batches` micro-batches of `size` rows each, the same every epoch.
class RegressionBatches : public BatchSource {
 public:
  RegressionBatches(std::int64_t batches, std::int64_t size) {
    at::manual_seed(3);
    x_ = at::randn({batches * size, 4});
    y_ = at::matmul(x_, at::tensor({1.0f, -2.0f, 0.5f, 3.0f}));
    batches_ = batches;
    size_ = size;
  }
  std::int64_t batches_per_epoch() const override { return batches_; }
  void start_epoch(std::int64_t) override { next_ = 0; }
  std::optional<TrainBatch> next() override {
    if (next_ == batches_) return std::nullopt;
    const std::int64_t begin = next_++ * size_;
    return TrainBatch{{{"x", x_.narrow(0, begin, size_)}, {"y", y_.narrow(0, begin, size_)}}, size_};
  }
  std::int64_t sample_index() const override { return next_ * size_; }
  void seek(std::int64_t, std::int64_t sample_index) override { next_ = sample_index / size_; }

 private:
  at::Tensor x_, y_;
  std::int64_t batches_ = 0, size_ = 0, next_ = 0;
};

struct Model {
  NamedTensor weight{"dense.weight", at::zeros({1, 4}).set_requires_grad(true)};
  NamedTensor bias{"dense.bias", at::zeros({1}).set_requires_grad(true)};
  NamedTensors parameters() const { return {weight, bias}; }
  at::Tensor loss(const TrainBatch& batch) const {
    const at::Tensor logits = at::addmm(bias.tensor, batch.tensors.at("x"), weight.tensor.t());
    return sequence_classification_loss(logits, batch.tensors.at("y"));
  }
};

TrainerOptions quiet_options() {
  TrainerOptions options;
  options.lr = 0.05;
  options.log_every = 0;
  return options;
}

TEST(Trainer, StepsPerEpochRoundUpOverAccumulation) {
  Model model;
  RegressionBatches batches(5, 4);
  TrainerOptions options = quiet_options();
  options.epochs = 3;
  options.grad_accumulation = 2;
  Trainer trainer(model.parameters(), options);
  EXPECT_EQ(trainer.total_steps(batches), 9);
  const TrainResult result = trainer.run(batches, [&](const TrainBatch& b) { return model.loss(b); });
  EXPECT_EQ(result.steps, 9);
  EXPECT_EQ(trainer.optimizer().state_export()[2].tensor.item<std::int64_t>(), 9);
}

TEST(Trainer, AccumulatingTwoHalvesEqualsOneFullBatch) {
  Model halves, full;
  RegressionBatches small(4, 4), large(2, 8);
  TrainerOptions options = quiet_options();
  options.max_steps = 2;
  options.grad_accumulation = 2;
  Trainer(halves.parameters(), options).run(small, [&](const TrainBatch& b) { return halves.loss(b); });
  options.grad_accumulation = 1;
  Trainer(full.parameters(), options).run(large, [&](const TrainBatch& b) { return full.loss(b); });
  EXPECT_TRUE(at::allclose(halves.weight.tensor, full.weight.tensor, 1e-6, 1e-7));
  EXPECT_TRUE(at::allclose(halves.bias.tensor, full.bias.tensor, 1e-6, 1e-7));
  EXPECT_FALSE(at::equal(full.weight.tensor, at::zeros({1, 4})));
}

TEST(Trainer, NonFiniteLossStopsNamingTheStep) {
  Model model;
  RegressionBatches batches(6, 4);
  TrainerOptions options = quiet_options();
  int calls = 0;
  auto loss = [&](const TrainBatch& b) {
    at::Tensor value = model.loss(b);
    return ++calls == 3 ? value * std::numeric_limits<float>::quiet_NaN() : value;
  };
  Trainer trainer(model.parameters(), options);
  const std::string message = error_of([&] { trainer.run(batches, loss); });
  EXPECT_TRUE(contains(message, "non-finite training at step 3 of 6"));
  EXPECT_TRUE(contains(message, "train.skip_nonfinite"));
}

TEST(Trainer, SkipNonFiniteLeavesParametersAndMomentsUntouched) {
  Model model;
  RegressionBatches batches(3, 4);
  TrainerOptions options = quiet_options();
  options.skip_nonfinite = true;
  int calls = 0;
  at::Tensor weight_before_step3;
  auto loss = [&](const TrainBatch& b) {
    at::Tensor value = model.loss(b);
    if (++calls != 3) return value;
    weight_before_step3 = model.weight.tensor.detach().clone();
    return value * std::numeric_limits<float>::infinity();
  };
  Trainer trainer(model.parameters(), options);
  const TrainResult result = trainer.run(batches, loss);
  EXPECT_EQ(result.steps, 3);
  EXPECT_EQ(result.skipped_steps, 1);
  EXPECT_TRUE(at::equal(model.weight.tensor.detach(), weight_before_step3));
  EXPECT_EQ(trainer.optimizer().state_export()[2].tensor.item<std::int64_t>(), 2);
}

TEST(Trainer, EarlyStoppingAfterPatienceEvaluationsAndBestIsKept) {
  Model model;
  RegressionBatches batches(10, 4);
  TrainerOptions options = quiet_options();
  options.eval_every = 2;
  options.metric_for_best = "accuracy";
  options.early_stopping_patience = 2;
  char path_template[] = "/tmp/dsee_trainer_XXXXXX";
  ASSERT_NE(mkdtemp(path_template), nullptr);
  options.metrics_path = std::filesystem::path(path_template) / "metrics.jsonl";
  const std::vector<double> scores = {0.5, 0.7, 0.6, 0.7, 0.9};  // no gain after step 4 for 2 evaluations
  std::size_t evaluation = 0;
  std::vector<std::int64_t> best_calls;
  Trainer trainer(model.parameters(), options);
  const TrainResult result = trainer.run(
      batches, [&](const TrainBatch& b) { return model.loss(b); },
      [&] {
        return std::map<std::string, double>{{"accuracy", scores[evaluation++]}};
      },
      [&](std::int64_t step) { best_calls.push_back(step); });
  EXPECT_TRUE(result.stopped_early);
  EXPECT_EQ(result.steps, 8);
  EXPECT_EQ(result.best_step, 4);
  EXPECT_DOUBLE_EQ(*result.best_metric, 0.7);
  EXPECT_EQ(best_calls, (std::vector<std::int64_t>{2, 4}));
  std::ifstream lines(options.metrics_path);
  int train_lines = 0, eval_lines = 0;
  for (std::string line; std::getline(lines, line);) {
    train_lines += line.find("\"kind\":\"train\"") != std::string::npos;
    eval_lines += line.find("\"kind\":\"eval\"") != std::string::npos;
  }
  EXPECT_EQ(train_lines, 8);
  EXPECT_EQ(eval_lines, 4);
  ::unlink(options.metrics_path.c_str());
  ::rmdir(path_template);
}

TEST(Trainer, RejectsBadOptions) {
  Model model;
  TrainerOptions options = quiet_options();
  options.grad_accumulation = 0;
  EXPECT_TRUE(contains(error_of([&] { Trainer(model.parameters(), options); }), "grad_accumulation must be >= 1"));
  options = quiet_options();
  options.early_stopping_patience = 2;
  EXPECT_TRUE(contains(error_of([&] { Trainer(model.parameters(), options); }), "set metric_for_best"));
}

TEST(Trainer, MetricForBestNotAmongTheMetricsIsRefusedNamingThem) {
  Model model;
  RegressionBatches batches(4, 4);
  TrainerOptions options = quiet_options();
  options.eval_every = 2;
  options.metric_for_best = "f1";
  Trainer trainer(model.parameters(), options);
  const auto message = error_of([&] {
    trainer.run(
        batches, [&](const TrainBatch& b) { return model.loss(b); },
        [] {
          return std::map<std::string, double>{{"accuracy", 0.5}, {"loss", 1.0}};
        });
  });
  EXPECT_TRUE(contains(message, "metric_for_best 'f1' is not among the evaluation's metrics (accuracy, loss)"))
      << message;
}

TEST(Trainer, SmallerIsBetterKeepsTheLowestLoss) {
  Model model;
  RegressionBatches batches(8, 4);
  TrainerOptions options = quiet_options();
  options.eval_every = 2;
  options.metric_for_best = "loss";
  options.greater_is_better = false;
  options.early_stopping_patience = 2;
  const std::vector<double> losses = {0.9, 0.5, 0.6, 0.55};
  std::size_t evaluation = 0;
  Trainer trainer(model.parameters(), options);
  const TrainResult result = trainer.run(
      batches, [&](const TrainBatch& b) { return model.loss(b); },
      [&] {
        return std::map<std::string, double>{{"loss", losses[evaluation++]}};
      });
  EXPECT_TRUE(result.stopped_early);
  EXPECT_EQ(result.best_step, 4);
  EXPECT_DOUBLE_EQ(*result.best_metric, 0.5);
  EXPECT_EQ(result.steps, 8);
}

}  // namespace
}  // namespace dsee

namespace dsee {
namespace {

// The data-parallel hooks (Note [The loop on many ranks]): one gradient sync
// per optimizer step, after the last micro-batch and before the non-finite
// guard; the summed loss over "two identical ranks" logs the 1-rank loss.
TEST(Trainer, SyncGradientsRunsOncePerStepBeforeTheNonFiniteGuard) {
  Model model;
  RegressionBatches batches(5, 4);
  TrainerOptions options = quiet_options();
  options.grad_accumulation = 2;
  options.skip_nonfinite = true;
  int syncs = 0;
  std::vector<std::int64_t> after;
  options.sync_gradients = [&] {
    ++syncs;
    EXPECT_TRUE(model.weight.tensor.grad().defined());
    model.weight.tensor.mutable_grad().fill_(std::numeric_limits<float>::quiet_NaN());
  };
  options.after_step = [&](std::int64_t step) { after.push_back(step); };
  Trainer trainer(model.parameters(), options);
  const TrainResult result = trainer.run(batches, [&](const TrainBatch& b) { return model.loss(b); });
  EXPECT_EQ(result.steps, 3);
  EXPECT_EQ(syncs, 3);
  EXPECT_EQ(result.skipped_steps, 3);  // the guard saw the synced (NaN) gradients
  EXPECT_TRUE(at::equal(model.weight.tensor.detach(), at::zeros({1, 4})));
  EXPECT_EQ(after, (std::vector<std::int64_t>{1, 2, 3}));
}

TEST(Trainer, SumOverRanksOfEqualRanksLogsTheOneRankLoss) {
  const auto dir = std::filesystem::temp_directory_path() / ("dsee-trainer-ranks-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto losses_of = [&](bool two_ranks) {
    Model model;
    RegressionBatches batches(4, 4);
    TrainerOptions options = quiet_options();
    options.grad_accumulation = 2;
    options.metrics_path = dir / (two_ranks ? "two.jsonl" : "one.jsonl");
    int calls = 0;
    if (two_ranks)
      options.sum_over_ranks = [&](std::vector<double>& values) {
        ++calls;
        EXPECT_EQ(values.size(), 3u);
        for (double& v : values) v *= 2;  // a second rank with the same numbers
      };
    Trainer(model.parameters(), options).run(batches, [&](const TrainBatch& b) { return model.loss(b); });
    EXPECT_EQ(calls, two_ranks ? 2 : 0);
    std::vector<double> out;
    std::ifstream in(options.metrics_path);
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return out;
  };
  const auto one = losses_of(false), two = losses_of(true);
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one, two);
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee

// metrics.jsonl after a stage restarted without a checkpoint, non-finite
// gradients under a finite loss (stop or skip, skips counted in the log),
// evaluation at epoch ends besides every N steps, and causal LM training with
// token-weighted accumulation.
namespace dsee {
namespace {

// Warnings and infos into a string while in scope.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("trainer-test", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return log_.str(); }

 private:
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> previous_;
};

// Stage "train" then stage "retune" into one metrics.jsonl; each stage is
// first stopped after `stop_after` steps without a checkpoint (a kill before
// the first one) and then started afresh, when stop_after > 0.
std::string two_stages(const std::filesystem::path& path, int stop_after) {
  ::unlink(path.c_str());
  const std::vector<int> attempts = stop_after > 0 ? std::vector<int>{stop_after, 0} : std::vector<int>{0};
  for (const char* stage : {"train", "retune"}) {
    for (const int stop : attempts) {
      Model model;
      RegressionBatches batches(3, 4);
      TrainerOptions options = quiet_options();
      options.epochs = 2;
      options.metrics_path = path;
      options.metrics_stage = stage;
      int steps = 0;
      if (stop > 0) options.should_stop = [&steps, stop] { return ++steps == stop; };
      const TrainResult result =
          Trainer(model.parameters(), options).run(batches, [&](const TrainBatch& b) { return model.loss(b); });
      EXPECT_EQ(result.stop_requested, stop > 0);
    }
  }
  return dsee_test::file_text(path);
}

TEST(Trainer, AFreshStartDropsTheLinesOfAnEarlierAttemptOfItsStage) {
  const auto dir = std::filesystem::temp_directory_path() / ("dsee-trainer-fresh-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string straight = two_stages(dir / "straight.jsonl", 0);
  const std::string killed = two_stages(dir / "killed.jsonl", 4);
  EXPECT_EQ(std::count(straight.begin(), straight.end(), '\n'), 12);  // 6 steps of each stage, no evaluation
  EXPECT_NE(straight.find("\"stage\":\"retune\""), std::string::npos);
  EXPECT_EQ(killed, straight);
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

// d sqrt(u)/du at u = 0 is inf, times du/dw = 0: NaN gradients, while the
// added value is 0 and the loss stays finite.
at::Tensor with_nan_gradient(const Model& model, at::Tensor loss) {
  return loss + at::sqrt(model.weight.tensor.sum() * 0);
}

TEST(Trainer, NonFiniteGradientUnderAFiniteLossStopsNamingTheStep) {
  Model model;
  RegressionBatches batches(6, 4);
  int calls = 0;
  auto loss = [&](const TrainBatch& b) {
    at::Tensor value = model.loss(b);
    return ++calls == 2 ? with_nan_gradient(model, value) : value;
  };
  Trainer trainer(model.parameters(), quiet_options());
  const std::string message = error_of([&] { trainer.run(batches, loss); });
  EXPECT_TRUE(contains(message, "non-finite training at step 2 of 6 (loss ")) << message;
  EXPECT_TRUE(contains(message, "nan): lower the learning rate")) << message;  // the norm: nan or -nan
  EXPECT_FALSE(contains(message, "(loss nan")) << message;
}

TEST(Trainer, NonFiniteGradientsAreSkippedAndTheSkipsCountedInTheLog) {
  Model model;
  RegressionBatches batches(5, 4);
  TrainerOptions options = quiet_options();
  options.skip_nonfinite = true;
  int calls = 0;
  at::Tensor weight_before_step4, weight_before_step5;
  auto loss = [&](const TrainBatch& b) {
    at::Tensor value = model.loss(b);
    ++calls;
    if (calls == 4) weight_before_step4 = model.weight.tensor.detach().clone();
    if (calls == 5) weight_before_step5 = model.weight.tensor.detach().clone();
    return calls == 2 || calls == 4 ? with_nan_gradient(model, value) : value;
  };
  LogCapture log;
  Trainer trainer(model.parameters(), options);
  const TrainResult result = trainer.run(batches, loss);
  const std::string text = log.text();
  EXPECT_EQ(result.steps, 5);
  EXPECT_EQ(result.skipped_steps, 2);
  EXPECT_TRUE(contains(text, "step 2: non-finite loss")) << text;
  EXPECT_TRUE(contains(text, "step skipped (skipped 1 of 2 steps so far)")) << text;
  EXPECT_TRUE(contains(text, "step skipped (skipped 2 of 4 steps so far)")) << text;
  EXPECT_TRUE(contains(text, "2 of 5 steps were skipped for a non-finite loss or gradient norm")) << text;
  EXPECT_FALSE(model.weight.tensor.isnan().any().item<bool>());
  EXPECT_FALSE(at::equal(model.weight.tensor.detach(), at::zeros({1, 4})));         // the other steps trained
  EXPECT_EQ(trainer.optimizer().state_export()[2].tensor.item<std::int64_t>(), 3);  // AdamW took 3 steps
  EXPECT_TRUE(at::equal(weight_before_step4, weight_before_step5));                 // step 4 changed nothing
}

TEST(Trainer, EvaluatesEveryNStepsAndAtEpochEndsOncePerStep) {
  Model model;
  RegressionBatches batches(5, 4);
  TrainerOptions options = quiet_options();
  options.epochs = 2;
  options.eval_every = 2;
  std::int64_t last_step = 0;
  std::vector<std::int64_t> evaluated;
  options.after_step = [&](std::int64_t step) { last_step = step; };
  Trainer trainer(model.parameters(), options);
  trainer.run(
      batches, [&](const TrainBatch& b) { return model.loss(b); },
      [&] {
        evaluated.push_back(last_step);
        return std::map<std::string, double>{{"accuracy", 0.5}};
      });
  // Every 2 steps, and the end of epoch 1 (step 5); step 10 ends epoch 2 and is a multiple of 2: once.
  EXPECT_EQ(evaluated, (std::vector<std::int64_t>{2, 4, 5, 6, 8, 10}));
}

TEST(Trainer, LabelSmoothingIsForCausalLmTrainingOnly) {
  Model model;
  TrainerOptions options = quiet_options();
  options.label_smoothing = 0.1;
  EXPECT_TRUE(contains(error_of([&] { Trainer(model.parameters(), options); }),
                       "label smoothing (0.1) applies to causal LM training only"));
  options.causal_lm = true;
  options.label_smoothing = 1.5;
  EXPECT_TRUE(
      contains(error_of([&] { Trainer(model.parameters(), options); }), "label smoothing must lie in [0, 1], got 1.5"));
}

// A bigram language model: logits = E[ids] · Wᵀ, [batch, seq, vocab].
struct Bigram {
  NamedTensor embedding{"embedding", at::randn({7, 5}, at::TensorOptions().dtype(at::kFloat)).set_requires_grad(true)};
  NamedTensor output{"output", at::randn({7, 5}).set_requires_grad(true)};
  at::Tensor logits(const TrainBatch& batch) const {
    return at::matmul(embedding.tensor.index_select(0, batch.tensors.at("input_ids").reshape({-1}))
                          .reshape({batch.tensors.at("input_ids").size(0), -1, 5}),
                      output.tensor.t());
  }
};

// The given micro-batches, the same every epoch.
class ListBatches : public BatchSource {
 public:
  explicit ListBatches(std::vector<TrainBatch> batches) : batches_(std::move(batches)) {}
  std::int64_t batches_per_epoch() const override { return static_cast<std::int64_t>(batches_.size()); }
  void start_epoch(std::int64_t) override { next_ = 0; }
  std::optional<TrainBatch> next() override {
    if (next_ == batches_.size()) return std::nullopt;
    return batches_[next_++];
  }
  std::int64_t sample_index() const override { return static_cast<std::int64_t>(next_); }
  void seek(std::int64_t, std::int64_t sample_index) override { next_ = static_cast<std::size_t>(sample_index); }

 private:
  std::vector<TrainBatch> batches_;
  std::size_t next_ = 0;
};

// Token-weighted accumulation (Note [Token-weighted accumulation]): two
// micro-batches with 2 and 7 counted tokens accumulate to exactly the step
// of one batch holding both, which a mean of the two micro-batch means
// would not (it weighs the 2 tokens as much as the 7).
TEST(Trainer, CausalLmAccumulationWeighsTokensLikeOneBatchOfAllOfThem) {
  at::manual_seed(11);
  const at::Tensor ids = at::randint(0, 7, {4, 6}, at::kLong);
  at::Tensor labels = ids.clone();
  labels.index_put_({0, at::indexing::Slice(0, 4)}, kIgnoreLabel);  // row 0: 2 counted tokens (4, 5)
  labels.index_put_({1}, kIgnoreLabel);                             // row 1: none (context only)
  labels.index_put_({2, at::indexing::Slice(0, 2)}, kIgnoreLabel);  // row 2: 4 (2..5)
  labels.index_put_({3, at::indexing::Slice(0, 3)}, kIgnoreLabel);  // row 3: 3 (3..5)
  auto rows = [&](std::int64_t begin, std::int64_t n) {
    return TrainBatch{{{"input_ids", ids.narrow(0, begin, n)}, {"labels", labels.narrow(0, begin, n)}}, n};
  };
  ASSERT_EQ(causal_lm_target_count(rows(0, 2).tensors.at("labels")), 2);
  ASSERT_EQ(causal_lm_target_count(rows(2, 2).tensors.at("labels")), 7);
  const auto dir = std::filesystem::temp_directory_path() / ("dsee-trainer-lm-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto train = [&](std::vector<TrainBatch> micro_batches, std::int64_t accumulation, const std::string& name) {
    at::manual_seed(5);
    Bigram model;
    const at::Tensor first_logits = model.logits(rows(0, 4)).detach();
    TrainerOptions options = quiet_options();
    options.epochs = 3;
    options.grad_accumulation = accumulation;
    options.causal_lm = true;
    options.label_smoothing = 0.1;
    options.metrics_path = dir / (name + ".jsonl");
    ListBatches batches(std::move(micro_batches));
    Trainer({model.embedding, model.output}, options).run(batches, [&](const TrainBatch& b) {
      return model.logits(b);
    });
    std::vector<double> losses;
    std::ifstream in(options.metrics_path);
    for (std::string line; std::getline(in, line);) losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return std::tuple{model, losses, first_logits};
  };
  const auto [accumulated, accumulated_losses, logits] = train({rows(0, 2), rows(2, 2)}, 2, "accumulated");
  const auto [whole, whole_losses, unused] = train({rows(0, 4)}, 1, "whole");
  ASSERT_EQ(accumulated_losses.size(), 3u);
  ASSERT_EQ(whole_losses.size(), 3u);
  // Step 1's loss is the token mean over the whole batch, from the initial logits.
  const double token_mean = causal_lm_loss(logits, labels, 0.1).item<double>();
  EXPECT_NEAR(accumulated_losses[0], token_mean, 1e-6 * token_mean);
  const double mean_of_means = (causal_lm_loss(logits.narrow(0, 0, 2), labels.narrow(0, 0, 2), 0.1).item<double>() +
                                causal_lm_loss(logits.narrow(0, 2, 2), labels.narrow(0, 2, 2), 0.1).item<double>()) /
                               2;
  EXPECT_GT(std::abs(mean_of_means - token_mean), 1e-3 * token_mean);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_NEAR(accumulated_losses[i], whole_losses[i], 1e-6 * whole_losses[i]);
  EXPECT_TRUE(at::allclose(accumulated.embedding.tensor, whole.embedding.tensor, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(accumulated.output.tensor, whole.output.tensor, 1e-5, 1e-6));
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

// The progress display: on a terminal one line redrawn in place
// ("\r" … "\033[K"), every step; otherwise a plain log line every
// log_every steps and the last. stderr is pointed at a pseudo-terminal, then
// at a file, so the trainer's own isatty() decides.
TEST(Trainer, ProgressRedrawsInPlaceOnATerminalAndLogsPlainLinesOtherwise) {
  auto train = [] {
    Model model;
    RegressionBatches batches(6, 4);
    TrainerOptions options = quiet_options();
    options.log_every = 2;
    LogCapture log;
    Trainer(model.parameters(), options).run(batches, [&](const TrainBatch& b) { return model.loss(b); });
    return log.text();
  };
  // stderr → `fd` while `body` runs.
  auto with_stderr = [](int fd, const auto& body) {
    std::fflush(stderr);
    const int saved = ::dup(STDERR_FILENO);
    ::dup2(fd, STDERR_FILENO);
    auto result = body();
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    return result;
  };

  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  ASSERT_GE(master, 0);
  ASSERT_EQ(::grantpt(master), 0);
  ASSERT_EQ(::unlockpt(master), 0);
  const int terminal = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(terminal, 0);
  const std::string terminal_log = with_stderr(terminal, train);
  ::close(terminal);
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);
  std::string screen;
  char buffer[4096];
  for (ssize_t n; (n = ::read(master, buffer, sizeof buffer)) > 0;) screen.append(buffer, static_cast<std::size_t>(n));
  ::close(master);
  for (int step = 1; step <= 6; ++step)
    EXPECT_TRUE(contains(screen, fmt::format("\rstep {}/6 epoch 1 loss ", step))) << screen;
  EXPECT_EQ(std::count(screen.begin(), screen.end(), '\r') - std::count(screen.begin(), screen.end(), '\n'), 6)
      << screen;  // the one final newline comes back as \r\n from the terminal
  EXPECT_TRUE(contains(screen, "\033[K")) << screen;
  EXPECT_TRUE(contains(screen, "samples/s ETA ")) << screen;
  EXPECT_FALSE(contains(terminal_log, "step 2/6")) << terminal_log;

  const auto file = std::filesystem::temp_directory_path() / ("dsee-trainer-progress-" + std::to_string(getpid()));
  const int plain = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(plain, 0);
  const std::string plain_log = with_stderr(plain, train);
  ::close(plain);
  const std::string written = dsee_test::file_text(file);
  ::unlink(file.c_str());
  EXPECT_EQ(written.find('\r'), std::string::npos) << written;
  for (int step = 1; step <= 6; ++step)
    EXPECT_EQ(contains(plain_log, fmt::format("step {}/6 epoch 1 loss ", step)), step % 2 == 0) << plain_log;
}

}  // namespace
}  // namespace dsee
