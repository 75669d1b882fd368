// Resuming the training loop (docs/training.md, 'Resuming `dsee run`'): a run
// interrupted after k steps and continued from the progress, AdamW state,
// parameters and RNG state captured at step k ends bit-identical to a
// straight run (parameters, optimizer moments) and writes a byte-identical
// metrics.jsonl. Dropout, gradient accumulation with a short last step per
// epoch, clipping, a warmup schedule and evaluation with best tracking are all
// on, so each piece of the state matters.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/train/checkpoint.h"
#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "error_of.h"
#include "run_dsee.h"

namespace dsee {
namespace {

// y = x·w; 5 micro-batches of 4 rows, reshuffled (by a fixed rule) each epoch.
class ShuffledBatches : public BatchSource {
 public:
  ShuffledBatches() {
    at::manual_seed(11);
    x_ = at::randn({20, 4});
    y_ = at::matmul(x_, at::tensor({1.0f, -2.0f, 0.5f, 3.0f}));
  }
  std::int64_t batches_per_epoch() const override { return 5; }
  void start_epoch(std::int64_t epoch) override {
    epoch_ = epoch;
    next_ = 0;
  }
  std::optional<TrainBatch> next() override {
    if (next_ == 5) return std::nullopt;
    const std::int64_t begin = (next_++ + epoch_ * 2) % 5 * 4;
    return TrainBatch{{{"x", x_.narrow(0, begin, 4)}, {"y", y_.narrow(0, begin, 4)}}, 4};
  }
  std::int64_t sample_index() const override { return next_ * 4; }
  void seek(std::int64_t epoch, std::int64_t sample_index) override {
    epoch_ = epoch;
    next_ = sample_index / 4;
  }

 private:
  at::Tensor x_, y_;
  std::int64_t epoch_ = 0, next_ = 0;
};

struct Model {
  NamedTensor weight{"dense.weight", at::zeros({1, 4}).set_requires_grad(true)};
  NamedTensor bias{"dense.bias", at::zeros({1}).set_requires_grad(true)};
  NamedTensors parameters() const { return {weight, bias}; }
  at::Tensor loss(const TrainBatch& batch) const {
    const at::Tensor x = at::dropout(batch.tensors.at("x"), 0.3, true);
    return sequence_classification_loss(at::addmm(bias.tensor, x, weight.tensor.t()), batch.tensors.at("y"));
  }
  std::map<std::string, double> evaluate(const ShuffledBatches&) const {
    at::NoGradGuard no_grad;
    return {{"neg_norm", -weight.tensor.norm().item<double>()}};
  }
};

TrainerOptions resume_options(const std::filesystem::path& metrics) {
  TrainerOptions options;
  options.epochs = 3;  // 3 steps per epoch (2 + 2 + 1 micro-batches): 9 steps
  options.grad_accumulation = 2;
  options.lr = 0.05;
  options.schedule.kind = LrScheduleKind::linear;
  options.schedule.warmup_ratio = 0.3;
  options.max_grad_norm = 0.5;
  options.eval_every = 2;
  options.metric_for_best = "neg_norm";
  options.log_every = 0;
  options.metrics_path = metrics;
  return options;
}

struct Snapshot {
  TrainerProgress progress;
  NamedTensors parameters, optimizer;
  CheckpointState rng;
};

NamedTensors cloned(const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [name, tensor] : tensors) out.push_back({name, tensor.detach().clone()});
  return out;
}

void expect_bit_identical(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_TRUE(at::equal(a[i].tensor, b[i].tensor)) << a[i].name;
  }
}

class Resume : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(Resume, InterruptedAndResumedRunIsBitIdenticalToAStraightRun) {
  const std::int64_t k = GetParam();
  const auto dir = std::filesystem::temp_directory_path() / ("dsee-resume-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto straight_metrics = dir / "straight.jsonl", resumed_metrics = dir / "resumed.jsonl";
  std::filesystem::remove(straight_metrics);
  std::filesystem::remove(resumed_metrics);
  ShuffledBatches data;

  at::manual_seed(5);
  Model straight;
  Trainer straight_trainer(straight.parameters(), resume_options(straight_metrics));
  const TrainResult straight_result = straight_trainer.run(
      data, [&](const TrainBatch& b) { return straight.loss(b); }, [&] { return straight.evaluate(data); });
  ASSERT_EQ(straight_result.steps, 9);

  // First process: checkpoints every step, stops after step k + 1, so
  // metrics.jsonl holds a line past the checkpoint of step k we resume from.
  at::manual_seed(5);
  std::vector<Snapshot> snapshots;
  {
    Model first;
    TrainerOptions options = resume_options(resumed_metrics);
    std::int64_t polls = 0;
    options.should_stop = [&] { return ++polls == k + 1; };
    options.checkpoint_every = 1;
    Trainer* trainer = nullptr;
    options.on_checkpoint = [&](const TrainerProgress& progress) {
      Snapshot s{progress, cloned(first.parameters()), cloned(trainer->optimizer().state_export()), {}};
      checkpoint_capture_rng(s.rng);
      snapshots.push_back(std::move(s));
    };
    Trainer first_trainer(first.parameters(), options);
    trainer = &first_trainer;
    const TrainResult result = first_trainer.run(
        data, [&](const TrainBatch& b) { return first.loss(b); }, [&] { return first.evaluate(data); });
    EXPECT_TRUE(result.stop_requested);
    EXPECT_EQ(result.steps, k + 1);
  }
  ASSERT_EQ(snapshots.size(), static_cast<std::size_t>(k + 1));
  const Snapshot& at_k = snapshots[static_cast<std::size_t>(k - 1)];
  ASSERT_EQ(at_k.progress.step, k);
  EXPECT_LT(at_k.progress.metrics_bytes, static_cast<std::int64_t>(std::filesystem::file_size(resumed_metrics)));

  // Second process: fresh parameters and generator, restored from step k.
  at::manual_seed(999);
  Model second;
  {
    at::NoGradGuard no_grad;
    second.weight.tensor.copy_(at_k.parameters[0].tensor);
    second.bias.tensor.copy_(at_k.parameters[1].tensor);
  }
  Trainer second_trainer(second.parameters(), resume_options(resumed_metrics));
  second_trainer.optimizer().state_import(at_k.optimizer);
  checkpoint_restore_rng(at_k.rng);
  const TrainResult resumed = second_trainer.run(
      data, [&](const TrainBatch& b) { return second.loss(b); }, [&] { return second.evaluate(data); }, {},
      &at_k.progress);

  EXPECT_EQ(resumed.steps, 9);
  EXPECT_EQ(resumed.best_step, straight_result.best_step);
  EXPECT_TRUE(resumed.best_metric == straight_result.best_metric);
  expect_bit_identical(second.parameters(), straight.parameters());
  expect_bit_identical(second_trainer.optimizer().state_export(), straight_trainer.optimizer().state_export());
  EXPECT_EQ(dsee_test::file_text(resumed_metrics), dsee_test::file_text(straight_metrics));
  std::filesystem::remove(straight_metrics);
  std::filesystem::remove(resumed_metrics);
  std::filesystem::remove(dir);
}

// k = 3 resumes at an epoch boundary, 4 and 5 inside an epoch (4: after the
// first step of epoch 2, an evaluation step; 5: before the short last step).
INSTANTIATE_TEST_SUITE_P(Trainer, Resume, ::testing::Values(3, 4, 5));

TEST(Trainer, ResumeRefusesAMetricsFileShorterThanTheCheckpoint) {
  const auto path = std::filesystem::temp_directory_path() / ("dsee-resume-short-" + std::to_string(getpid()));
  std::ofstream(path) << "{}\n";
  Model model;
  ShuffledBatches data;
  TrainerOptions options = resume_options(path);
  options.metric_for_best.clear();
  Trainer trainer(model.parameters(), options);
  TrainerProgress progress;
  progress.step = 2;
  progress.sample_index = 16;
  progress.metrics_bytes = 100;
  const std::string message = error_of([&] {
    trainer.run(
        data, [&](const TrainBatch& b) { return model.loss(b); }, {}, {}, &progress);
  });
  EXPECT_NE(message.find("holds 3 bytes but the checkpoint recorded 100"), std::string::npos) << message;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dsee
