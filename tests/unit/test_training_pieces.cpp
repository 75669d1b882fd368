// The training pieces' contracts that the parity test (tests/parity/
// test_optimizer.py) does not reach: user errors with their messages,
// non-finite gradient detection, exact invariants of AdamW and the schedules.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/train/losses.h"
#include "core/train/lr_schedule.h"
#include "core/train/metrics.h"
#include "core/train/optimizer.h"
#include "error_of.h"

namespace dsee {
namespace {

NamedTensor parameter(const std::string& name, at::Tensor value) {
  return {name, value.to(at::kFloat).set_requires_grad(true)};
}

TEST(AdamW, FirstStepMovesEachEntryByLrTimesGradOverAbsGradPlusEps) {
  // With t = 1 the bias corrections cancel: p -= lr · g / (|g| + eps).
  NamedTensor p = parameter("w", at::tensor({1.0, -2.0, 0.5}));
  const at::Tensor grad = at::tensor({0.25f, -4.0f, 1e-9f});
  p.tensor.mutable_grad() = grad.clone();
  AdamW optimizer({p}, AdamWOptions{});
  optimizer.step(0.1);
  const at::Tensor expected = at::tensor({1.0f, -2.0f, 0.5f}) - 0.1 * grad / (grad.abs() + 1e-8);
  EXPECT_TRUE(at::allclose(p.tensor.detach(), expected, 0, 1e-7));
}

TEST(AdamW, DecayIsDecoupledAndSkipsExcludedNames) {
  // Zero gradient: Adam's term is 0, so only p *= 1 - lr·wd acts.
  NamedTensor weight = parameter("classifier.weight", at::ones({2}));
  NamedTensor bias = parameter("classifier.bias", at::ones({2}));
  for (auto* p : {&weight, &bias}) p->tensor.mutable_grad() = at::zeros({2});
  AdamW optimizer({weight, bias}, AdamWOptions{.weight_decay = 0.5});
  optimizer.step(0.1);
  EXPECT_FLOAT_EQ(weight.tensor[0].item<float>(), 0.95f);
  EXPECT_FLOAT_EQ(bias.tensor[0].item<float>(), 1.0f);
  AdamW decay_all({weight, bias}, AdamWOptions{.weight_decay = 0.5, .exclude_bias_and_norm = false});
  EXPECT_EQ(decay_all.weight_decay_of(1), 0.5);
}

TEST(AdamW, ParameterWithoutGradientDoesNotStep) {
  NamedTensor a = parameter("a", at::ones({2})), b = parameter("b", at::ones({2}));
  a.tensor.mutable_grad() = at::ones({2});
  AdamW optimizer({a, b}, AdamWOptions{});
  optimizer.step(0.1);
  const auto state = optimizer.state_export();
  EXPECT_EQ(state[2].name, "a.step");
  EXPECT_EQ(state[2].tensor.item<std::int64_t>(), 1);
  EXPECT_EQ(state[5].tensor.item<std::int64_t>(), 0);
  EXPECT_TRUE(at::equal(b.tensor.detach(), at::ones({2})));
}

TEST(AdamW, DecayExclusionFollowsTransformersNames) {
  EXPECT_TRUE(parameter_decay_excluded("bert.embeddings.LayerNorm.weight"));
  EXPECT_TRUE(parameter_decay_excluded("encoder.layer.3.output.dense.bias"));
  EXPECT_TRUE(parameter_decay_excluded("h.11.ln_2.weight"));
  EXPECT_TRUE(parameter_decay_excluded("ln_f.weight"));
  EXPECT_TRUE(parameter_decay_excluded("model.norm.weight"));
  EXPECT_FALSE(parameter_decay_excluded("h.0.attn.c_attn:q.lora_A"));
  EXPECT_FALSE(parameter_decay_excluded("encoder.layer.0.attention.self.query.sparse_values"));
  EXPECT_FALSE(parameter_decay_excluded("h.1.mlp.c_fc.weight"));
  EXPECT_FALSE(parameter_decay_excluded("classifier.weight"));
}

TEST(AdamW, RejectsDuplicateNamesNonFloatTensorsAndBadOptions) {
  EXPECT_TRUE(contains(error_of([] {
                         AdamW({parameter("w", at::ones({1})), parameter("w", at::ones({1}))}, {});
                       }),
                       "'w' is listed twice"));
  EXPECT_TRUE(contains(error_of([] { AdamW({{"w", at::ones({1}, at::kDouble)}}, {}); }), "float32"));
  EXPECT_TRUE(contains(error_of([] { AdamW({}, AdamWOptions{.beta2 = 1.0}); }), "betas"));
  NamedTensor p = parameter("w", at::ones({3}));
  p.tensor.mutable_grad() = at::ones({4});
  AdamW optimizer({p}, {});
  EXPECT_TRUE(contains(error_of([&] { optimizer.step(0.1); }), "gradient of 'w' has shape [4]"));
}

TEST(AdamW, StateImportValidatesNamesShapesAndLeftovers) {
  NamedTensor p = parameter("w", at::ones({3}));
  AdamW optimizer({p}, {});
  NamedTensors state = optimizer.state_export();
  EXPECT_EQ(error_of([&] { optimizer.state_import(state); }), "<no error>");
  auto missing = state;
  missing.pop_back();
  EXPECT_TRUE(contains(error_of([&] { optimizer.state_import(missing); }), "'w.step' is missing"));
  auto wrong_shape = state;
  wrong_shape[0].tensor = at::zeros({4});
  EXPECT_TRUE(contains(error_of([&] { optimizer.state_import(wrong_shape); }), "'w.exp_avg' is Float [4], expected"));
  auto extra = state;
  extra.push_back({"v.exp_avg", at::zeros({1})});
  EXPECT_TRUE(contains(error_of([&] { optimizer.state_import(extra); }), "'v.exp_avg' belongs to no parameter"));
}

TEST(GradClipNorm, NonFiniteNormIsReportedAndGradientsAreLeftAlone) {
  NamedTensor a = parameter("a", at::ones({2})), b = parameter("b", at::ones({2}));
  a.tensor.mutable_grad() = at::tensor({3.0f, 4.0f});
  b.tensor.mutable_grad() = at::tensor({std::numeric_limits<float>::quiet_NaN(), 0.0f});
  EXPECT_TRUE(std::isnan(grad_clip_norm({a, b}, 1.0)));
  EXPECT_TRUE(at::equal(a.tensor.grad(), at::tensor({3.0f, 4.0f})));
  b.tensor.mutable_grad() = at::tensor({std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_TRUE(std::isinf(grad_clip_norm({a, b}, 1.0)));
}

TEST(GradClipNorm, ScalesToMaxNormAndReturnsTheNormBefore) {
  NamedTensor a = parameter("a", at::ones({2}));
  a.tensor.mutable_grad() = at::tensor({3.0f, 4.0f});
  EXPECT_FLOAT_EQ(grad_clip_norm({a}, 1.0), 5.0);
  EXPECT_NEAR(at::linalg_vector_norm(a.tensor.grad(), 2).item<double>(), 1.0, 1e-6);
  EXPECT_FLOAT_EQ(grad_clip_norm({a}, 0.0), 1.0);  // no clipping, norm still measured
}

TEST(LrSchedule, WarmupThenLinearDecayToZero) {
  LrSchedule schedule(1.0, {.kind = LrScheduleKind::linear, .warmup_steps = 2}, 6);
  const std::vector<double> expected = {0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0};
  for (std::int64_t step = 0; step < 8; ++step) EXPECT_DOUBLE_EQ(schedule.lr_at(step), expected[step]) << step;
}

TEST(LrSchedule, WarmupRatioRoundsUpAndBothWarmupsAreAnError) {
  EXPECT_EQ(lr_warmup_steps({.warmup_ratio = 0.06}, 100), 6);
  EXPECT_EQ(lr_warmup_steps({.warmup_ratio = 0.06}, 101), 7);
  EXPECT_TRUE(contains(error_of([] { lr_warmup_steps({.warmup_steps = 3, .warmup_ratio = 0.1}, 10); }), "not both"));
  EXPECT_TRUE(contains(error_of([] { lr_warmup_steps({.warmup_ratio = 1.5}, 10); }), "warmup_ratio"));
  EXPECT_TRUE(contains(error_of([] { LrSchedule(1.0, {}, 0); }), "at least one optimizer step"));
  EXPECT_TRUE(contains(error_of([] { lr_schedule_kind_from_name("step"); }), "linear, constant or cosine"));
}

TEST(Losses, RejectShapeAndDtypeMismatches) {
  EXPECT_TRUE(contains(error_of([] {
                         sequence_classification_loss(at::zeros({4, 3}), at::zeros({5}, at::kLong));
                       }),
                       "[batch, num_labels]"));
  EXPECT_TRUE(contains(error_of([] {
                         sequence_classification_loss(at::zeros({4, 3}), at::zeros({4}));
                       }),
                       "int64 classes"));
  EXPECT_TRUE(contains(error_of([] {
                         sequence_classification_loss(at::zeros({4, 1}), at::zeros({4}, at::kLong));
                       }),
                       "floating point"));
  EXPECT_TRUE(contains(error_of([] {
                         causal_lm_loss(at::zeros({2, 5, 7}), at::zeros({2, 4}, at::kLong));
                       }),
                       "[batch, seq, vocab]"));
  EXPECT_TRUE(contains(error_of([] {
                         causal_lm_loss(at::zeros({2, 5, 7}), at::zeros({2, 5}, at::kLong), 1.5);
                       }),
                       "label smoothing"));
}

TEST(Losses, CausalLmLossIgnoresMaskedTargets) {
  // Changing a logit row whose next label is -100 must not change the loss.
  at::Tensor logits = at::randn({1, 4, 5});
  const at::Tensor labels = at::tensor(std::vector<std::int64_t>{-100, -100, 2, 3}).view({1, 4});
  const double before = causal_lm_loss(logits, labels).item<double>();
  logits[0][0].fill_(7.0);  // predicts labels[1] = -100
  logits[0][3].fill_(7.0);  // the last position predicts nothing
  EXPECT_DOUBLE_EQ(causal_lm_loss(logits, labels).item<double>(), before);
  EXPECT_EQ(causal_lm_target_count(labels), 2);
}

TEST(Metrics, RejectMismatchedOrEmptyInputsAndUnknownTasks) {
  const std::vector<std::int64_t> three = {0, 1, 1}, two = {0, 1};
  EXPECT_TRUE(contains(error_of([&] { accuracy(three, two); }), "3 predictions but 2 labels"));
  EXPECT_TRUE(contains(error_of([] { matthews_correlation({}, {}); }), "no examples"));
  EXPECT_TRUE(contains(error_of([] { glue_task_from_name("squad"); }), "unknown GLUE task 'squad'"));
  EXPECT_TRUE(contains(error_of([] {
                         glue_metrics(GlueTask::mnli, at::zeros({4, 2}), at::zeros({4}, at::kLong));
                       }),
                       "[n, 3]"));
}

TEST(Metrics, TaskNamesAndMainMetrics) {
  EXPECT_EQ(glue_task_from_name("SST-2"), GlueTask::sst2);
  EXPECT_EQ(glue_task_from_name("STS-B"), GlueTask::stsb);
  EXPECT_EQ(glue_task_info(GlueTask::cola).main_metric, "mcc");
  EXPECT_EQ(glue_task_info(GlueTask::stsb).num_labels, 1);
  EXPECT_EQ(glue_task_info(GlueTask::qqp).main_metric, "f1");
}

TEST(Metrics, AverageRanksShareTies) {
  const std::vector<double> values = {3.0, 1.0, 3.0, 2.0, 3.0};
  EXPECT_EQ(average_ranks(values), (std::vector<double>{4.0, 1.0, 4.0, 2.0, 4.0}));
}

}  // namespace
}  // namespace dsee
