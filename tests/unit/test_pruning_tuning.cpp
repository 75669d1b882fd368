// Pruning with a DSEE tuning attached (core/sparsity/pruning.h on core/tuning/tuning.h):
// P_adapt scored by |ΔW|, head scores from the unscaled update, Ω re-indexed
// by head removal, and the trainable counts against tuning_attach.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/sparsity/pruning.h"
#include "core/tuning/adapted.h"
#include "core/tuning/counting.h"
#include "core/tuning/tuning.h"
#include "tiny_models.h"

namespace dsee {
namespace {

// A trained-looking update: B and the S values random (B = 0 at attach).
// s = 32 / 2 = 16 multiplies them; larger S values make the attention
// scores so large that the 1e-6 comparisons below measure rounding alone.
std::shared_ptr<ModelTuning> attach_trained(PretrainedModel& model, std::int64_t c, std::uint64_t seed) {
  TuningOptions options;
  options.rank = 2;
  options.seed = seed;
  auto tuning = tuning_attach(model, options, random_omega(model, c, seed));
  at::NoGradGuard no_grad;
  at::manual_seed(seed + 1);
  for (auto* u : tuning->updates()) {
    u->lora_B.copy_(at::randn(u->lora_B.sizes()) * 0.3);
    u->sparse_values.copy_(at::randn(u->sparse_values.sizes()) * 0.05);
  }
  return tuning;
}

// The rows head removal keeps in a block of `rows` rows, given the removed
// heads (positions = original ids here: nothing was removed before).
at::Tensor kept_rows(std::int64_t rows, std::int64_t head_dim, const std::vector<std::int64_t>& removed) {
  std::vector<std::int64_t> keep;
  for (std::int64_t r = 0; r < rows; ++r)
    if (std::find(removed.begin(), removed.end(), r / head_dim) == removed.end()) keep.push_back(r);
  return at::tensor(keep, at::kLong);
}

TEST(HeadPruningWithTuning, DeltaWeightOnKeptRowsIsUnchangedAndOmegaShrinks) {
  for (const auto& json : {bert_json(), gpt2_json()}) {
    auto model = tiny_model(json, 21);
    auto tuning = attach_trained(*model, 40, 5);
    std::vector<at::Tensor> before;
    std::vector<std::int64_t> omega_before;
    for (auto* u : tuning->updates()) {
      before.push_back(u->delta_weight().detach().clone());
      omega_before.push_back(u->omega.numel());
    }
    const std::map<std::int64_t, std::vector<std::int64_t>> heads = {{0, {1, 3}}, {1, {0}}};
    PrunePlan plan;
    plan.heads = heads;
    prune_plan_apply(*model, plan);
    const auto updates = tuning->updates();
    ASSERT_EQ(updates.size(), before.size());
    for (std::size_t i = 0; i < updates.size(); ++i) {
      const auto layer = updates[i]->matrix.layer;
      const auto removed = heads.count(layer) ? heads.at(layer) : std::vector<std::int64_t>{};
      const auto rows = kept_rows(before[i].size(0), 6, removed);
      const auto want = before[i].index_select(0, rows);
      const auto got = updates[i]->delta_weight().detach();
      ASSERT_EQ(got.sizes(), want.sizes()) << updates[i]->matrix.prefix;
      EXPECT_TRUE(at::equal(got, want)) << updates[i]->matrix.prefix;
      // Ω keeps exactly its entries in kept rows.
      const auto entry_rows =
          at::div(random_omega(*tiny_model(json, 21), 40, 5)[i].indices, before[i].size(1), "floor");
      const auto survivors = at::isin(entry_rows, rows).sum().item<std::int64_t>();
      EXPECT_EQ(updates[i]->omega.numel(), survivors) << updates[i]->matrix.prefix;
      EXPECT_LE(survivors, omega_before[i]);
    }
  }
}

TEST(HeadPruningWithTuning, PrunedTunedModelEqualsZeroedHeadContexts) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    auto pruned = tiny_model(json, 22);
    auto reference = tiny_model(json, 22);
    auto t1 = attach_trained(*pruned, 12, 9);
    auto t2 = attach_trained(*reference, 12, 9);
    const std::map<std::int64_t, std::vector<std::int64_t>> heads = {{0, {0, 2}}, {1, {3}}};
    PrunePlan plan;
    plan.heads = heads;
    prune_plan_apply(*pruned, plan);
    for (const auto& [layer, ids] : heads) {
      const auto module = json.contains("n_embd") ? fmt::format("h.{}.attn.c_proj", layer)
                                                  : fmt::format("encoder.layer.{}.attention.output.dense", layer);
      for (const auto h : ids) reference->linear(module).weight.narrow(1, h * 6, 6).zero_();
    }
    ModelInput input;
    input.input_ids = at::tensor({3, 7, 2, 9, 4, 5, 6, 8}, at::kLong).reshape({2, 4});
    at::NoGradGuard no_grad;
    const auto got = pruned->forward(input).logits, want = reference->forward(input).logits;
    // 1e-6 relative to the largest logit (the pruned matmuls sum in another order).
    const auto scale = std::max(1.0, want.abs().max().item<double>());
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-6 * scale) << json.dump() << " max |logit| " << scale;
  }
}

TEST(UnstructuredPlanWithTuning, AdaptPoolScoredByDeltaWeight) {
  auto model = tiny_model(bert_json(), 23);
  auto tuning = attach_trained(*model, 16, 3);
  const auto plan = unstructured_plan(*model, tuning.get(), {.p_adapt = 0.4, .p_rest = 0.0});
  std::int64_t total = 0, removed = 0;
  double removed_max = 0.0, kept_min = 1e30;
  for (auto* u : tuning->updates()) {
    const auto score = u->delta_weight().detach().abs();
    total += score.numel();
    at::Tensor keep = at::ones(score.sizes(), at::kBool);
    for (const auto& m : plan.masks)
      if (m.module == u->matrix.module) keep = m.mask;
    removed += (~keep).sum().item<std::int64_t>();
    if ((~keep).any().item<bool>())
      removed_max = std::max(removed_max, score.masked_select(~keep).max().item<double>());
    kept_min = std::min(kept_min, score.masked_select(keep).min().item<double>());
  }
  EXPECT_EQ(removed, std::llround(0.4 * double(total)));
  EXPECT_LE(removed_max, kept_min);
  // Only P_adapt lost entries.
  for (const auto& m : plan.masks) EXPECT_TRUE(m.module.ends_with("query") || m.module.ends_with("value")) << m.module;
}

TEST(StructuredPlanWithTuning, HeadScoresAreRowSumsOfTheUnscaledUpdate) {
  for (const auto& json : {bert_json(), gpt2_json()}) {
    auto model = tiny_model(json, 24);
    auto tuning = attach_trained(*model, 20, 4);
    const auto scores = head_scores(*model, tuning.get());
    std::vector<at::Tensor> expected(std::size_t(model->config().num_layers));
    for (auto& e : expected) e = at::zeros({4}, at::kDouble);
    for (auto* u : tuning->updates()) {
      // B·A + P_Ω(S), written out here.
      auto dense = at::matmul(u->lora_B, u->lora_A).detach().to(at::kDouble).reshape({-1});
      dense.index_add_(0, u->omega, u->sparse_values.detach().to(at::kDouble));
      expected[u->matrix.layer] += dense.reshape({4, 6, -1}).abs().sum(at::IntArrayRef{1, 2});
    }
    for (std::size_t l = 0; l < expected.size(); ++l)
      EXPECT_TRUE(at::allclose(scores[l], expected[l], 1e-6, 1e-9)) << json.dump() << " layer " << l;
    const auto plan = structured_plan(*model, tuning.get(), 1);
    for (std::size_t l = 0; l < expected.size(); ++l)
      EXPECT_EQ(plan.heads.at(std::int64_t(l)), (std::vector<std::int64_t>{expected[l].argmin().item<std::int64_t>()}));
  }
}

TEST(TrainableCount, EqualsTheTensorsTuningAttachTrains) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    for (auto method : {TuningMethod::dsee, TuningMethod::lora, TuningMethod::full}) {
      auto model = tiny_model(json, 25);
      const auto meta = model_on_meta(model->config(), json.contains("architectures"));
      TuningOptions options;
      options.method = method;
      options.rank = 3;
      const std::int64_t c = method == TuningMethod::dsee ? 7 : 0;
      const auto predicted = trainable_parameter_count(*meta, options, c);
      auto tuning = tuning_attach(
          *model, options, method == TuningMethod::dsee ? random_omega(*model, 7, 1) : std::vector<OmegaEntry>{});
      EXPECT_EQ(trainable_parameter_count(*tuning), predicted) << json.dump() << " " << tuning_method_name(method);
    }
  }
}

TEST(ModelCount, NonZerosAreThoseOfTheDeployedWeight) {
  auto model = tiny_model(bert_json(), 26);
  auto tuning = attach_trained(*model, 8, 2);
  const auto plan = unstructured_plan(*model, tuning.get(), {.p_adapt = 0.5, .p_rest = 0.2});
  prune_plan_apply(*model, plan);
  std::int64_t zeros = 0;
  for (const auto& m : plan.masks) zeros += (~m.mask).sum().item<std::int64_t>();
  const auto count = model_count(*model, 3);
  EXPECT_EQ(count.nonzero_parameters, count.parameters - zeros);
  model_merge(*model);
  EXPECT_EQ(model_count(*model, 3).nonzero_parameters, count.nonzero_parameters);
  EXPECT_EQ(model_count(*model, 3).flops_nonzero, count.flops_nonzero);
}

}  // namespace
}  // namespace dsee
