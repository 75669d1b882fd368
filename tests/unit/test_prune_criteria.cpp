// prune.criterion (core/sparsity/pruning.h, 'Criteria'): the recipe key's
// values, and the delta / merged / random scores of P_adapt and of heads
// against scores written out here. Parity with an independent Python
// computation on a trained run is tests/parity/test_prune_criteria.py.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "core/sparsity/pruning.h"
#include "error_of.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"
#include "tiny_models.h"

namespace dsee {
namespace {

std::shared_ptr<ModelTuning> attach_random(PretrainedModel& model, std::uint64_t seed) {
  TuningOptions options;
  options.rank = 2;
  options.alpha = 6.0;  // s = 3: delta's and merged's orders differ from |B·A + S|'s
  auto tuning = tuning_attach(model, options, random_omega(model, 12, seed));
  randomise_updates(*tuning, seed + 1);
  return tuning;
}

// The P_adapt keep-masks of `plan`, one per update (all-true where none).
std::vector<at::Tensor> adapt_masks(const PrunePlan& plan, ModelTuning& tuning) {
  std::vector<at::Tensor> out;
  for (auto* u : tuning.updates()) {
    at::Tensor keep = at::ones({u->matrix.rows, u->lora_A.size(1)}, at::kBool);
    for (const auto& m : plan.masks)
      if (m.module == u->matrix.module) keep = m.mask.narrow(0, u->matrix.row_offset, u->matrix.rows);
    out.push_back(keep);
  }
  return out;
}

bool same_masks(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!at::equal(a[i], b[i])) return false;
  return true;
}

// The draw of pruning.h's 'Criteria', cut into the updates' blocks.
std::vector<at::Tensor> random_scores(const std::vector<SparseUpdate*>& updates, std::uint64_t seed) {
  std::int64_t total = 0;
  for (auto* u : updates) total += u->matrix.rows * u->lora_A.size(1);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto draw = at::rand({total}, generator, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> out;
  std::int64_t at_entry = 0;
  for (auto* u : updates) {
    const auto n = u->matrix.rows * u->lora_A.size(1);
    out.push_back(draw.narrow(0, at_entry, n).view({u->matrix.rows, -1}));
    at_entry += n;
  }
  return out;
}

TEST(PruneCriterionKey, DefaultsToDeltaAndReadsEveryChoice) {
  EXPECT_EQ(recipe_from_config(Config::defaults(recipe_schema(), {})).prune.criterion, PruneCriterion::delta);
  for (const auto criterion : {PruneCriterion::delta, PruneCriterion::random, PruneCriterion::merged}) {
    const auto name = std::string(prune_criterion_name(criterion));
    EXPECT_EQ(recipe_from_config(Config::defaults(recipe_schema(), {"prune.criterion=" + name})).prune.criterion,
              criterion)
        << name;
    EXPECT_EQ(prune_criterion_from_name(name), criterion);
  }
}

TEST(PruneCriterionKey, BadValueIsRefusedNamingTheChoices) {
  const auto message = error_of([] { Config::defaults(recipe_schema(), {"prune.criterion=magnitude"}); });
  EXPECT_TRUE(contains(message, "prune.criterion")) << message;
  EXPECT_TRUE(contains(message, "is not one of: delta, random, merged")) << message;
  EXPECT_TRUE(contains(error_of([] { prune_criterion_from_name("abs"); }), "use 'delta', 'random' or 'merged'"));
}

TEST(PruneCriteria, DeltaIsTheDefaultScoring) {
  auto model = tiny_model(bert_json(), 31);
  auto tuning = attach_random(*model, 4);
  const auto plain = unstructured_plan(*model, tuning.get(), {.p_adapt = 0.35, .p_rest = 0.0});
  const auto delta =
      unstructured_plan(*model, tuning.get(), {.p_adapt = 0.35, .p_rest = 0.0}, {PruneCriterion::delta, 9});
  EXPECT_TRUE(same_masks(adapt_masks(plain, *tuning), adapt_masks(delta, *tuning)));
}

TEST(PruneCriteria, MergedScoresTheMergedWeight) {
  for (const auto& json : {bert_json(), gpt2_json()}) {
    auto model = tiny_model(json, 32);
    auto tuning = attach_random(*model, 5);
    std::vector<at::Tensor> merged;
    for (auto* u : tuning->updates())
      merged.push_back(
          (u->matrix.linear->weight.narrow(0, u->matrix.row_offset, u->matrix.rows) + u->delta_weight()).abs());
    const auto plan =
        unstructured_plan(*model, tuning.get(), {.p_adapt = 0.4, .p_rest = 0.0}, {PruneCriterion::merged, 0});
    EXPECT_TRUE(same_masks(adapt_masks(plan, *tuning), pool_keep_masks(merged, 0.4))) << json.dump();
    const auto delta = unstructured_plan(*model, tuning.get(), {.p_adapt = 0.4, .p_rest = 0.0});
    EXPECT_FALSE(same_masks(adapt_masks(plan, *tuning), adapt_masks(delta, *tuning))) << json.dump();
  }
}

TEST(PruneCriteria, RandomIsTheSeededDrawSameForASeedOtherForAnother) {
  auto model = tiny_model(gpt2_json(), 33);
  auto tuning = attach_random(*model, 6);
  const UnstructuredLevels levels{.p_adapt = 0.5, .p_rest = 0.2};
  const auto first = unstructured_plan(*model, tuning.get(), levels, {PruneCriterion::random, 7});
  const auto again = unstructured_plan(*model, tuning.get(), levels, {PruneCriterion::random, 7});
  const auto other = unstructured_plan(*model, tuning.get(), levels, {PruneCriterion::random, 8});
  ASSERT_EQ(first.masks.size(), again.masks.size());
  for (std::size_t i = 0; i < first.masks.size(); ++i) EXPECT_TRUE(at::equal(first.masks[i].mask, again.masks[i].mask));
  EXPECT_TRUE(same_masks(adapt_masks(first, *tuning), pool_keep_masks(random_scores(tuning->updates(), 7), 0.5)));
  EXPECT_FALSE(same_masks(adapt_masks(first, *tuning), adapt_masks(other, *tuning)));
  // P_rest is scored by |W| whatever the criterion.
  const auto delta = unstructured_plan(*model, tuning.get(), levels);
  for (const auto& m : delta.masks) {
    if (!m.module.ends_with("c_proj") && !m.module.ends_with("c_fc")) continue;
    for (const auto& r : first.masks)
      if (r.module == m.module) {
        EXPECT_TRUE(at::equal(m.mask, r.mask)) << m.module;
      }
  }
}

TEST(PruneCriteria, HeadScoresSumTheCriterionsEntryScoresPerHead) {
  auto model = tiny_model(bert_json(), 34);
  auto tuning = attach_random(*model, 7);
  const auto random = random_scores(tuning->updates(), 11);
  for (const auto criterion : {PruneCriterion::delta, PruneCriterion::random, PruneCriterion::merged}) {
    std::vector<at::Tensor> expected(2);
    for (auto& e : expected) e = at::zeros({4}, at::kDouble);
    const auto updates = tuning->updates();
    for (std::size_t i = 0; i < updates.size(); ++i) {
      auto* u = updates[i];
      const auto entries = criterion == PruneCriterion::random  ? random[i]
                           : criterion == PruneCriterion::delta ? u->unscaled().abs()
                                                                : (u->matrix.linear->weight + u->delta_weight()).abs();
      expected[u->matrix.layer] += entries.detach().sum(1).to(at::kDouble).reshape({4, 6}).sum(1);
    }
    const auto scores = head_scores(*model, tuning.get(), {criterion, 11});
    for (std::size_t l = 0; l < expected.size(); ++l)
      EXPECT_TRUE(at::equal(scores[l], expected[l])) << prune_criterion_name(criterion) << " layer " << l;
  }
  EXPECT_FALSE(at::equal(head_scores(*model, tuning.get(), {PruneCriterion::random, 11})[0],
                         head_scores(*model, tuning.get(), {PruneCriterion::random, 12})[0]));
}

TEST(PruneCriteria, WithoutUpdatesMergedScoresTheWeight) {
  // Full fine-tuning has no update: P_adapt is query and value with ΔW = 0.
  auto model = tiny_model(bert_json(), 35);
  TuningOptions options;
  options.method = TuningMethod::full;
  auto tuning = tuning_attach(*model, options, {});
  std::vector<at::Tensor> weights;
  for (const auto& block : pool_adapt(*model, tuning.get()))
    weights.push_back(block.linear->weight.detach().narrow(0, block.row_offset, block.rows).abs());
  const auto plan =
      unstructured_plan(*model, tuning.get(), {.p_adapt = 0.3, .p_rest = 0.0}, {PruneCriterion::merged, 0});
  const auto want = pool_keep_masks(weights, 0.3);
  ASSERT_EQ(plan.masks.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(at::equal(plan.masks[i].mask, want[i]));
}

}  // namespace
}  // namespace dsee
