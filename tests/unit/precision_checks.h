// Mixed-precision checks (run.precision = bf16, docs/precision.md) shared by
// the CPU unit tests (tests/unit/test_precision.cpp) and the CUDA test
// (tests/gpu/test_precision_cuda.cpp), so both devices run the same
// assertions: which tensors are bf16 and which fp32 before and after Trainer
// steps (AdamW moments included), how far one bf16 forward lies from the fp32
// forward of the same weights, and that bf16 training lowers the loss.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "tiny_models.h"

namespace dsee::precision_checks {

// A model of `source`'s architecture in `dtype` on `device` with `source`'s weights.
inline std::unique_ptr<PretrainedModel> model_copy(PretrainedModel& source, at::ScalarType dtype, c10::Device device) {
  std::unique_ptr<PretrainedModel> model;
  if (source.config().family == ModelFamily::gpt2)
    model = std::make_unique<Gpt2Model>(source.config(), dtype, device);
  else
    model = std::make_unique<EncoderModel>(source.config(), true, dtype, device);
  auto to = model->tensor_slots();
  auto from = source.tensor_slots();
  for (std::size_t i = 0; i < to.size(); ++i) to[i].tensor->copy_(*from[i].tensor);
  return model;
}

inline TuningOptions dsee_options(std::int64_t rank = 4) {
  TuningOptions o;
  o.method = TuningMethod::dsee;
  o.rank = rank;
  o.alpha = 2.0 * double(rank);
  o.seed = 7;
  return o;
}

// Copies every trainable tensor of `from` into `to` by name (same names and shapes).
inline void copy_trainables(ModelTuning& from, ModelTuning& to) {
  at::NoGradGuard no_grad;
  auto source = from.trainable_parameters();
  auto target = to.trainable_parameters();
  ASSERT_EQ(source.size(), target.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    ASSERT_EQ(source[i].name, target[i].name);
    target[i].tensor.copy_(source[i].tensor);
  }
}

// One micro-batch: ids [batch, seq] and labels (classes for BERT/RoBERTa,
// the ids themselves for GPT-2's causal LM loss), on `device`.
inline TrainBatch random_batch(const PretrainedModel& model, std::int64_t batch, std::int64_t seq, std::uint64_t seed,
                               c10::Device device) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto& c = model.config();
  const auto low = c.family == ModelFamily::roberta ? 3 : 0;  // RoBERTa: no pad (1) inside
  const auto ids = at::randint(low, c.vocab_size, {batch, seq}, generator, at::TensorOptions().dtype(at::kLong));
  TrainBatch out;
  out.tensors["input_ids"] = ids.to(device);
  out.tensors["labels"] =
      c.family == ModelFamily::gpt2
          ? ids.to(device)
          : at::randint(0, c.num_labels, {batch}, generator, at::TensorOptions().dtype(at::kLong)).to(device);
  out.samples = batch;
  return out;
}

inline at::Tensor logits_of(PretrainedModel& model, const TrainBatch& batch) {
  ModelInput input;
  input.input_ids = batch.tensors.at("input_ids");
  return model.forward(input).logits;
}

// The task's loss in fp32: cross-entropy on the classes, or GPT-2's causal LM loss.
inline at::Tensor loss_of(PretrainedModel& model, const TrainBatch& batch) {
  const auto logits = logits_of(model, batch);
  return model.config().family == ModelFamily::gpt2 ? causal_lm_loss(logits, batch.tensors.at("labels"))
                                                    : sequence_classification_loss(logits, batch.tensors.at("labels"));
}

// max |actual − expected| / max |expected|, in fp64.
inline double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  const auto a = actual.detach().to(at::kCPU, at::kDouble), e = expected.detach().to(at::kCPU, at::kDouble);
  return (a - e).abs().max().item<double>() / e.abs().max().item<double>();
}

// The same batch every epoch, `batches` times per epoch.
class RepeatedBatch final : public BatchSource {
 public:
  RepeatedBatch(TrainBatch batch, std::int64_t batches) : batch_(std::move(batch)), batches_(batches) {}
  std::int64_t batches_per_epoch() const override { return batches_; }
  void start_epoch(std::int64_t) override { left_ = batches_; }
  std::optional<TrainBatch> next() override {
    if (left_ == 0) return std::nullopt;
    --left_;
    return batch_;
  }
  std::int64_t sample_index() const override { return (batches_ - left_) * batch_.samples; }
  void seek(std::int64_t, std::int64_t sample_index) override {
    left_ = batches_ - sample_index / std::max<std::int64_t>(batch_.samples, 1);
  }

 private:
  TrainBatch batch_;
  std::int64_t batches_ = 0, left_ = 0;
};

inline TrainerOptions trainer_options(std::int64_t steps, double lr) {
  TrainerOptions options;
  options.epochs = 0;
  options.max_steps = steps;
  options.lr = lr;
  options.max_grad_norm = 1.0;
  options.log_every = 0;
  return options;
}

// After tuning_attach on a bf16 model and `steps` Trainer steps: every
// trainable tensor, its gradient and its AdamW moments are fp32 on `device`;
// every other tensor of the model is bf16 and received no gradient.
inline void check_dtypes_after_training(const nlohmann::json& json, c10::Device device, std::int64_t steps = 3) {
  SCOPED_TRACE(json.at("model_type").get<std::string>());
  auto source = tiny_model(json, 1);
  auto model = model_copy(*source, at::kBFloat16, device);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 4, 2));
  Trainer trainer(tuning->trainable_parameters(), trainer_options(steps, 1e-2));
  RepeatedBatch batches(random_batch(*model, 4, 6, 3, device), 1);
  tuning->set_training(true);
  const auto result = trainer.run(batches, [&](const TrainBatch& b) { return loss_of(*model, b); });
  EXPECT_EQ(result.steps, steps);

  std::set<const void*> trainable;
  for (const auto& [name, t] : tuning->trainable_parameters()) {
    trainable.insert(t.unsafeGetTensorImpl());
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
    EXPECT_EQ(t.device(), device) << name;
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_EQ(t.grad().scalar_type(), at::kFloat) << name;
  }
  if (json.at("model_type") != "gpt2") {
    const auto* head = json.at("model_type") == "roberta" ? "classifier.out_proj" : "classifier";
    EXPECT_TRUE(trainable.contains(model->linear(head).weight.unsafeGetTensorImpl()));
    EXPECT_EQ(logits_of(*model, random_batch(*model, 2, 5, 4, device)).scalar_type(), at::kFloat);
  }
  for (const auto& slot : model->tensor_slots()) {
    if (trainable.contains(slot.tensor->unsafeGetTensorImpl())) continue;
    EXPECT_EQ(slot.tensor->scalar_type(), at::kBFloat16) << slot.name;
    EXPECT_FALSE(slot.tensor->grad().defined()) << slot.name;
  }
  const auto state = trainer.optimizer().state_export();
  EXPECT_EQ(state.size(), 3 * trainable.size());
  for (const auto& [name, t] : state) {
    if (name.ends_with(".step")) {
      EXPECT_EQ(t.item<std::int64_t>(), steps) << name;
      continue;
    }
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
    EXPECT_EQ(t.device(), device) << name;
    EXPECT_GT(t.abs().max().item<double>(), 0.0) << name;
  }
}

struct Deviation {
  double logits = 0, loss = 0;
};

// One forward of the same weights and the same A, B, S, head in fp32 and in
// bf16 on `device`: the relative deviation of the bf16 logits and loss.
inline Deviation bf16_deviation(const nlohmann::json& json, c10::Device device) {
  auto source = tiny_model(json, 1);
  auto fp32 = model_copy(*source, at::kFloat, device);
  auto bf16 = model_copy(*source, at::kBFloat16, device);
  const auto omega = random_omega(*fp32, 4, 2);
  auto tuning32 = tuning_attach(*fp32, dsee_options(), omega);
  auto tuning16 = tuning_attach(*bf16, dsee_options(), omega);
  randomise_updates(*tuning32, 3);
  copy_trainables(*tuning32, *tuning16);
  const auto batch = random_batch(*fp32, 4, 8, 5, device);
  at::NoGradGuard no_grad;
  Deviation d;
  d.logits = relative_error(logits_of(*bf16, batch), logits_of(*fp32, batch));
  d.loss = relative_error(loss_of(*bf16, batch), loss_of(*fp32, batch));
  return d;
}

// bf16 training on one repeated batch: the loss before and after `steps` steps.
inline std::pair<double, double> bf16_training_losses(const nlohmann::json& json, c10::Device device,
                                                      std::int64_t steps) {
  auto source = tiny_model(json, 1);
  auto model = model_copy(*source, at::kBFloat16, device);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 4, 2));
  const auto batch = random_batch(*model, 8, 6, 3, device);
  const auto before = loss_of(*model, batch).item<double>();
  Trainer trainer(tuning->trainable_parameters(), trainer_options(steps, 1e-2));
  RepeatedBatch batches(batch, 1);
  tuning->set_training(true);
  trainer.run(batches, [&](const TrainBatch& b) { return loss_of(*model, b); });
  tuning->set_training(false);
  at::NoGradGuard no_grad;
  return {before, loss_of(*model, batch).item<double>()};
}

}  // namespace dsee::precision_checks
