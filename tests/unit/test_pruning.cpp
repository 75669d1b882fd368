// DSEE pruning (core/sparsity/pruning.h): exact counts per pool with ties, pool
// membership per family, the |W| fallback plans, and head removal against
// the unpruned model with those heads' contexts zeroed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "core/sparsity/pruning.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

std::vector<bool> flags(const at::Tensor& keep) {
  const auto flat = keep.reshape({-1}).to(at::kBool);
  std::vector<bool> out;
  for (std::int64_t i = 0; i < flat.numel(); ++i) out.push_back(flat[i].item<bool>());
  return out;
}

TEST(PoolKeepMasks, RemovesRoundedCountSmallestFirstTiesToLowerIndex) {
  // Pool order a then b; flat: a = 1 2 2 0, b = 2 5 2.
  const auto a = at::tensor({1.0f, 2.0f, 2.0f, 0.0f}).reshape({2, 2});
  const auto b = at::tensor({2.0f, 5.0f, 2.0f}).reshape({1, 3});
  // round(0.5 · 7) = 4 (half away from zero): 0, 1, then the first two 2s (both in a).
  auto keep = pool_keep_masks({a, b}, 0.5);
  ASSERT_EQ(keep.size(), 2u);
  EXPECT_EQ(keep[0].sizes(), a.sizes());
  EXPECT_EQ(keep[1].sizes(), b.sizes());
  EXPECT_EQ(flags(keep[0]), (std::vector<bool>{false, false, false, false}));
  EXPECT_EQ(flags(keep[1]), (std::vector<bool>{true, true, true}));
  // round(5/7 · 7) = 5: the next tied 2 is b's first entry, not its third.
  keep = pool_keep_masks({a, b}, 5.0 / 7.0);
  EXPECT_EQ(flags(keep[1]), (std::vector<bool>{false, true, true}));
  // round(0.3 · 7) = round(2.1) = 2: 0 and 1 only.
  keep = pool_keep_masks({a, b}, 0.3);
  EXPECT_EQ(flags(keep[0]), (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ(flags(keep[1]), (std::vector<bool>{true, true, true}));
}

TEST(PoolKeepMasks, AllTiedRemovesTheFirstFlatIndices) {
  const auto a = at::zeros({3, 3});
  const auto b = at::zeros({2});
  // round(0.5 · 11) = 6: a's first six entries in row-major order.
  const auto keep = pool_keep_masks({a, b}, 0.5);
  EXPECT_EQ(flags(keep[0]), (std::vector<bool>{false, false, false, false, false, false, true, true, true}));
  EXPECT_EQ(flags(keep[1]), (std::vector<bool>{true, true}));
}

TEST(PoolKeepMasks, EndsOfTheRange) {
  const auto a = at::randn({4, 5});
  EXPECT_TRUE(pool_keep_masks({a}, 0.0)[0].all().item<bool>());
  EXPECT_FALSE(pool_keep_masks({a}, 1.0)[0].any().item<bool>());
  EXPECT_TRUE(contains(error_of([&] { pool_keep_masks({a}, 1.5); }), "outside [0, 1]"));
}

TEST(PoolKeepMasks, LargeRandomPoolMatchesAStableSort) {
  at::manual_seed(3);
  // Rounded values force many ties across the three members.
  std::vector<at::Tensor> scores = {at::randint(0, 50, {30, 20}).to(at::kFloat), at::randint(0, 50, {7}).to(at::kFloat),
                                    at::randint(0, 50, {11, 13}).to(at::kFloat)};
  std::vector<at::Tensor> flat;
  for (auto& s : scores) flat.push_back(s.reshape({-1}));
  const auto all = at::cat(flat);
  const auto total = all.numel();
  for (double p : {0.1, 0.37, 0.5, 0.93}) {
    const auto n = std::llround(p * double(total));
    const auto order = std::get<1>(at::sort(all, /*stable=*/true, 0, false));
    auto expected_removed = at::zeros({total}, at::kBool);
    expected_removed.index_fill_(0, order.narrow(0, 0, n), true);
    std::vector<at::Tensor> keep_flat;
    for (auto& k : pool_keep_masks(scores, p)) keep_flat.push_back(k.reshape({-1}));
    EXPECT_TRUE(at::equal(at::cat(keep_flat), expected_removed.logical_not())) << "p = " << p;
  }
}

std::vector<std::string> modules_with_rows(const std::vector<PoolBlock>& blocks) {
  std::vector<std::string> out;
  for (const auto& b : blocks) out.push_back(fmt::format("{}[{}+{}]", b.module, b.row_offset, b.rows));
  return out;
}

TEST(Pools, BertAdaptIsQueryValueRestIsEveryOtherEncoderProjectionAndPooler) {
  auto model = tiny_model(bert_json(), 1);
  std::vector<std::string> adapt, rest;
  for (int l = 0; l < 2; ++l) {
    const auto p = fmt::format("encoder.layer.{}.", l);
    adapt.push_back(p + "attention.self.query[0+24]");
    adapt.push_back(p + "attention.self.value[0+24]");
    rest.push_back(p + "attention.self.key[0+24]");
    rest.push_back(p + "attention.output.dense[0+24]");
    rest.push_back(p + "intermediate.dense[0+30]");
    rest.push_back(p + "output.dense[0+24]");
  }
  rest.push_back("pooler.dense[0+24]");
  EXPECT_EQ(modules_with_rows(pool_adapt(*model, nullptr)), adapt);
  EXPECT_EQ(modules_with_rows(pool_rest(*model, nullptr)), rest);
}

TEST(Pools, RobertaRestHasClassifierDenseNotOutProj) {
  auto model = tiny_model(roberta_json(), 1);
  const auto rest = modules_with_rows(pool_rest(*model, nullptr));
  EXPECT_EQ(rest.back(), "classifier.dense[0+24]");
  EXPECT_EQ(rest.size(), 2u * 4u + 1u);
}

TEST(Pools, Gpt2RestHasTheKThirdOfCAttn) {
  auto model = tiny_model(gpt2_json(), 1);
  std::vector<std::string> adapt, rest;
  for (int l = 0; l < 3; ++l) {
    const auto p = fmt::format("h.{}.", l);
    adapt.push_back(p + "attn.c_attn[0+24]");
    adapt.push_back(p + "attn.c_attn[48+24]");
    rest.push_back(p + "attn.c_attn[24+24]");
    rest.push_back(p + "attn.c_proj[0+24]");
    rest.push_back(p + "mlp.c_fc[0+96]");
    rest.push_back(p + "mlp.c_proj[0+24]");
  }
  EXPECT_EQ(modules_with_rows(pool_adapt(*model, nullptr)), adapt);
  EXPECT_EQ(modules_with_rows(pool_rest(*model, nullptr)), rest);
}

// Σ zeros over a plan's masks restricted to the given pool's blocks.
std::int64_t removed_in(const PrunePlan& plan, const std::vector<PoolBlock>& pool) {
  std::int64_t removed = 0;
  for (const auto& b : pool)
    for (const auto& m : plan.masks)
      if (m.module == b.module) removed += (~m.mask.narrow(0, b.row_offset, b.rows)).sum().item<std::int64_t>();
  return removed;
}

std::int64_t pool_size(const std::vector<PoolBlock>& pool) {
  std::int64_t n = 0;
  for (const auto& b : pool) n += b.rows * b.linear->in_features();
  return n;
}

TEST(UnstructuredPlan, RestPoolLosesExactlyRoundedCountByMagnitude) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    auto model = tiny_model(json, 2);
    const auto rest = pool_rest(*model, nullptr);
    const auto plan = unstructured_plan(*model, nullptr, {.p_adapt = 0.0, .p_rest = 0.3});
    const auto n = pool_size(rest);
    EXPECT_EQ(removed_in(plan, rest), std::llround(0.3 * double(n)));
    EXPECT_EQ(removed_in(plan, pool_adapt(*model, nullptr)), 0);
    // One global threshold: every removed |W| <= every kept |W| of the pool.
    double removed_max = 0.0, kept_min = 1e30;
    for (const auto& b : rest) {
      const auto w = b.linear->weight.narrow(0, b.row_offset, b.rows).abs();
      at::Tensor keep = at::ones(w.sizes(), at::kBool);
      for (const auto& m : plan.masks)
        if (m.module == b.module) keep = m.mask.narrow(0, b.row_offset, b.rows);
      if ((~keep).any().item<bool>()) removed_max = std::max(removed_max, w.masked_select(~keep).max().item<double>());
      kept_min = std::min(kept_min, w.masked_select(keep).min().item<double>());
    }
    EXPECT_LE(removed_max, kept_min);
    // Never pruned: the final classifier.
    for (const auto& m : plan.masks) {
      EXPECT_NE(m.module, "classifier");
      EXPECT_NE(m.module, "classifier.out_proj");
    }
  }
}

TEST(UnstructuredPlan, WithoutAnUpdateTheAdaptPoolLosesItsFirstFlatEntries) {
  auto model = tiny_model(bert_json(), 2);
  const auto plan = unstructured_plan(*model, nullptr, {.p_adapt = 0.6, .p_rest = 0.0});
  // P_adapt = layer 0 query, value, layer 1 query, value; 4·576 entries;
  // round(0.6 · 2304) = 1382 = query 0 (576) + value 0 (576) + 230 of query 1.
  ASSERT_EQ(plan.masks.size(), 3u);
  EXPECT_EQ(plan.masks[0].module, "encoder.layer.0.attention.self.query");
  EXPECT_EQ(plan.masks[1].module, "encoder.layer.0.attention.self.value");
  EXPECT_EQ(plan.masks[2].module, "encoder.layer.1.attention.self.query");
  EXPECT_FALSE(plan.masks[0].mask.any().item<bool>());
  EXPECT_FALSE(plan.masks[1].mask.any().item<bool>());
  const auto q1 = plan.masks[2].mask.reshape({-1});
  EXPECT_FALSE(q1.narrow(0, 0, 230).any().item<bool>());
  EXPECT_TRUE(q1.narrow(0, 230, 576 - 230).all().item<bool>());
}

TEST(UnstructuredPlan, Gpt2CAttnMaskCombinesItsThirds) {
  auto model = tiny_model(gpt2_json(), 4);
  const auto plan = unstructured_plan(*model, nullptr, {.p_adapt = 1.0, .p_rest = 0.5});
  const auto& c_attn = plan.masks.front();
  ASSERT_EQ(c_attn.module, "h.0.attn.c_attn");
  EXPECT_EQ(c_attn.mask.sizes(), (std::vector<std::int64_t>{72, 24}));
  EXPECT_FALSE(c_attn.mask.narrow(0, 0, 24).any().item<bool>());   // q: all of P_adapt goes
  EXPECT_FALSE(c_attn.mask.narrow(0, 48, 24).any().item<bool>());  // v
  const auto k_kept = c_attn.mask.narrow(0, 24, 24).sum().item<std::int64_t>();
  EXPECT_GT(k_kept, 0);
  EXPECT_LT(k_kept, 24 * 24);
}

TEST(PrunePlanApply, MaskedForwardEqualsForwardWithZeroedWeights) {
  auto model = tiny_model(bert_json(), 5);
  auto reference = tiny_model(bert_json(), 5);
  const auto plan = unstructured_plan(*model, nullptr, {.p_adapt = 0.0, .p_rest = 0.5});
  prune_plan_apply(*model, plan);
  for (const auto& m : plan.masks) reference->linear(m.module).weight.mul_(m.mask);
  ModelInput input;
  input.input_ids = at::tensor({3, 7, 1, 9, 4, 2}, at::kLong).reshape({2, 3});
  const auto expected = reference->forward(input).logits;
  EXPECT_TRUE(at::allclose(model->forward(input).logits, expected, 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(tiny_model(bert_json(), 5)->forward(input).logits, expected, 1e-6, 1e-6));
}

TEST(PrunePlanApply, WrongMaskShapeNamesTheModule) {
  auto model = tiny_model(bert_json(), 5);
  PrunePlan plan;
  plan.masks.push_back({"encoder.layer.0.intermediate.dense", at::ones({3, 3}, at::kBool)});
  EXPECT_TRUE(contains(error_of([&] { prune_plan_apply(*model, plan); }),
                       "the mask of encoder.layer.0.intermediate.dense is [3, 3], but the projection is [30, 24]"));
}

// The unpruned model with the removed heads' contexts zeroed: the attention
// output ignores those heads' columns, which is what removing them does.
void zero_head_contexts(PretrainedModel& model, const std::map<std::int64_t, std::vector<std::int64_t>>& heads) {
  const auto head_dim = model.config().head_dim();
  for (const auto& [layer, ids] : heads) {
    const auto module = model.config().family == ModelFamily::gpt2
                            ? fmt::format("h.{}.attn.c_proj", layer)
                            : fmt::format("encoder.layer.{}.attention.output.dense", layer);
    for (const auto h : ids) model.linear(module).weight.narrow(1, h * head_dim, head_dim).zero_();
  }
}

TEST(PrunePlanHeads, PrunedModelEqualsZeroedHeadContextsForEveryFamily) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    auto pruned = tiny_model(json, 6);
    auto reference = tiny_model(json, 6);
    PrunePlan plan;
    plan.heads = {{0, {1, 3}}, {1, {0}}};
    prune_plan_apply(*pruned, plan);
    zero_head_contexts(*reference, plan.heads);
    EXPECT_EQ(pruned->config().pruned_heads, plan.heads);
    EXPECT_EQ(pruned->linears()[0].second->out_features(), json.contains("n_embd") ? 3 * 12 : 12);
    ModelInput input;
    input.input_ids = at::tensor({3, 7, 2, 9, 4, 5, 6, 8}, at::kLong).reshape({2, 4});
    const auto got = pruned->forward(input), want = reference->forward(input);
    EXPECT_TRUE(at::allclose(got.logits, want.logits, 1e-6, 1e-6)) << json.dump();
    EXPECT_TRUE(at::allclose(got.last_hidden_state, want.last_hidden_state, 1e-6, 1e-6)) << json.dump();
    // Zeroing a head changes the function, so the comparison can fail.
    EXPECT_FALSE(at::allclose(tiny_model(json, 6)->forward(input).logits, want.logits, 1e-6, 1e-6));
  }
}

// Σ |W| over each head's query and value rows, computed here from the weights.
std::vector<double> weight_head_scores(PretrainedModel& model, std::int64_t layer) {
  const auto& c = model.config();
  const auto d = c.head_dim();
  std::vector<at::Tensor> blocks;
  if (c.family == ModelFamily::gpt2) {
    const auto& w = model.linear(fmt::format("h.{}.attn.c_attn", layer)).weight;
    const auto width = w.size(0) / 3;
    blocks = {w.narrow(0, 0, width), w.narrow(0, 2 * width, width)};
  } else {
    const auto p = fmt::format("encoder.layer.{}.attention.self.", layer);
    blocks = {model.linear(p + "query").weight, model.linear(p + "value").weight};
  }
  std::vector<double> scores;
  for (std::int64_t h = 0; h < blocks[0].size(0) / d; ++h) {
    double s = 0.0;
    for (const auto& b : blocks) s += b.narrow(0, h * d, d).abs().to(at::kDouble).sum().item<double>();
    scores.push_back(s);
  }
  return scores;
}

TEST(StructuredPlan, WithoutATuningRemovesLowestWeightHeadsPerLayer) {
  for (const auto& json : {bert_json(), gpt2_json()}) {
    auto model = tiny_model(json, 7);
    const auto plan = structured_plan(*model, nullptr, 2);
    for (std::int64_t layer = 0; layer < model->config().num_layers; ++layer) {
      const auto scores = weight_head_scores(*model, layer);
      std::vector<std::int64_t> order = {0, 1, 2, 3};
      std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return scores[a] < scores[b]; });
      std::vector<std::int64_t> expected = {order[0], order[1]};
      std::sort(expected.begin(), expected.end());
      EXPECT_EQ(plan.heads.at(layer), expected) << json.dump() << " layer " << layer;
    }
  }
}

TEST(StructuredPlan, TiedHeadsGoLowerIdFirst) {
  auto model = tiny_model(bert_json(), 7);
  // Heads 2 and 1 of layer 0 score 0 (their query and value rows are zero);
  // head 3 of layer 1 scores 0 alone.
  for (const auto* name : {"query", "value"}) {
    model->linear(fmt::format("encoder.layer.0.attention.self.{}", name)).weight.narrow(0, 6, 12).zero_();
    model->linear(fmt::format("encoder.layer.1.attention.self.{}", name)).weight.narrow(0, 18, 6).zero_();
  }
  auto plan = structured_plan(*model, nullptr, 1);
  EXPECT_EQ(plan.heads.at(0), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(plan.heads.at(1), (std::vector<std::int64_t>{3}));
  plan = structured_plan(*model, nullptr, 2);
  EXPECT_EQ(plan.heads.at(0), (std::vector<std::int64_t>{1, 2}));
}

TEST(StructuredPlan, ScoresFollowOriginalIdsAfterEarlierPruning) {
  auto model = tiny_model(bert_json(), 8);
  PrunePlan first;
  first.heads = {{0, {0}}};
  prune_plan_apply(*model, first);
  const auto plan = structured_plan(*model, nullptr, 1);
  const auto scores = weight_head_scores(*model, 0);  // positions 0..2 = original heads 1..3
  const auto lowest = std::min_element(scores.begin(), scores.end()) - scores.begin();
  EXPECT_EQ(plan.heads.at(0), (std::vector<std::int64_t>{lowest + 1}));
  EXPECT_TRUE(
      contains(error_of([&] { structured_plan(*model, nullptr, 3); }), "cannot remove 3 heads from layer 0: it has 3"));
}

}  // namespace
}  // namespace dsee

namespace dsee {
namespace {

TEST(PruneCommands, CountAndPruneOnATinyFolder) {
  const auto dir = std::filesystem::temp_directory_path() / ("dsee-prune-cli-" + std::to_string(getpid()));
  auto model = tiny_model(bert_json(), 12);
  model_save(*model, dir / "model");
  // dsee r=4 c=3: 4 matrices 24×24 → 4·(4·48 + 3) = 780, plus the classifier 2·24 + 2 = 50.
  auto r = dsee_test::run_dsee(fmt::format("count --model {} --rank 4 --c 3 --seq-len 5", (dir / "model").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "trainable            830 ")) << r.output;
  EXPECT_TRUE(contains(r.output, "FLOPs dense          ")) << r.output;
  r = dsee_test::run_dsee(fmt::format("prune --model {} --out {}", (dir / "model").string(), (dir / "out").string()));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "give a plan")) << r.output;
  r = dsee_test::run_dsee(
      fmt::format("prune --model {} --out {} --heads 1", (dir / "model").string(), (dir / "out").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "layer   0: heads removed")) << r.output;
  auto pruned = model_load(dir / "out");
  EXPECT_EQ(pruned->config().pruned_heads, structured_plan(*model, nullptr, 1).heads);
  std::system(fmt::format("rm -rf '{}'", dir.string()).c_str());  // Note [std::filesystem and libtorch]
}

}  // namespace
}  // namespace dsee
