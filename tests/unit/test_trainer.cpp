// The training loop on a tiny linear regression: step counts, gradient
// accumulation equal to one large batch, the non-finite guard (stop naming
// the step, or skip), evaluation, best tracking, early stopping, metrics.jsonl.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/losses.h"
#include "core/trainer.h"
#include "error_of.h"

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
  std::vector<NamedTensor> parameters() const { return {weight, bias}; }
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
