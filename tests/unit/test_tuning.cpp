// Tuning methods (core/tuning/tuning.h): the wrapped forward against the dense
// formula, gradients (frozen tensors get none; S values against central
// finite differences in fp64), shrinking (keep_rows / keep_columns re-index
// Ω), merging, trainable names and order, and the user errors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <set>

#include "core/tuning/tuning.h"
#include "error_of.h"
#include "tiny_models.h"

namespace dsee {
namespace {

// ΔW of the projection, dense [out, in], built directly from the definition:
// s·(B·A + S) with S scattered densely, placed at the block's rows.
at::Tensor dense_delta(ModelTuning& tuning, const Linear& linear) {
  auto delta = at::zeros(linear.weight.sizes(), at::kDouble);
  for (auto* u : tuning.updates()) {
    if (u->matrix.linear != &linear) continue;
    const auto m = u->matrix.rows, n = linear.in_features();
    auto s = at::zeros({m * n}, at::kDouble);
    s.index_put_({u->omega}, u->sparse_values.detach().to(at::kDouble));
    auto block =
        u->scale * (at::mm(u->lora_B.detach().to(at::kDouble), u->lora_A.detach().to(at::kDouble)) + s.view({m, n}));
    delta.narrow(0, u->matrix.row_offset, m).add_(block);
  }
  return delta;
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>();
}

// Random 0/1 mask (about 30% zeros) on every projection.
void random_masks(PretrainedModel& model, std::uint64_t seed) {
  at::manual_seed(seed);
  for (auto& [name, linear] : model.linears())
    linear->mask = (at::rand(linear->weight.sizes()) > 0.3).to(linear->weight.scalar_type());
}

ModelInput tiny_input(const PretrainedModel& model) {
  ModelInput in;
  const auto vocab = model.config().vocab_size;
  in.input_ids = at::arange(10, at::kLong).remainder(vocab).view({2, 5}) * 3 % vocab;
  return in;
}

TuningOptions dsee_options(std::int64_t rank = 3, double alpha = 6.0) {
  TuningOptions o;
  o.method = TuningMethod::dsee;
  o.rank = rank;
  o.alpha = alpha;
  o.seed = 7;
  return o;
}

TEST(TuningForward, WrappedProjectionEqualsDenseFormula) {
  for (const auto& json : {bert_json(), gpt2_json()}) {
    auto model = tiny_model(json, 1);
    const auto patterns = default_target_modules(model->config().family);
    auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 5, 2, patterns));
    randomise_updates(*tuning, 3);
    const auto x = at::randn({2, 4, model->config().hidden_size});
    int wrapped = 0;
    for (auto& [name, linear] : model->linears()) {
      if (!linear->tuning) continue;
      ++wrapped;
      const auto expected =
          at::linear(x.to(at::kDouble), linear->weight.to(at::kDouble) + dense_delta(*tuning, *linear),
                     linear->bias.to(at::kDouble));
      EXPECT_LT(max_abs(linear->forward(x), expected), 2e-5) << name;
    }
    EXPECT_EQ(wrapped, model->config().num_layers * (json == gpt2_json() ? 1 : 2));
  }
}

TEST(TuningForward, MaskWithReferenceVariantAddsUpdateToMaskedWeight) {
  auto model = tiny_model(bert_json(), 1);
  auto options = dsee_options();
  options.mask_update = false;
  auto tuning = tuning_attach(*model, options, random_omega(*model, 4, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  random_masks(*model, 4);
  const auto x = at::randn({3, 24});
  auto& q = model->linear("encoder.layer.1.attention.self.query");
  const auto w = q.weight.to(at::kDouble) * q.mask.to(at::kDouble) + dense_delta(*tuning, q);
  EXPECT_LT(max_abs(q.forward(x), at::linear(x.to(at::kDouble), w, q.bias.to(at::kDouble))), 2e-5);
}

TEST(TuningForward, MaskUpdateMasksTheUpdatedWeight) {
  auto model = tiny_model(bert_json(), 1);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 4, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  random_masks(*model, 4);
  const auto x = at::randn({3, 24});
  auto& v = model->linear("encoder.layer.0.attention.self.value");
  const auto w = (v.weight.to(at::kDouble) + dense_delta(*tuning, v)) * v.mask.to(at::kDouble);
  EXPECT_LT(max_abs(v.forward(x), at::linear(x.to(at::kDouble), w, v.bias.to(at::kDouble))), 2e-5);
}

TEST(TuningForward, StartsAtThePretrainedFunction) {
  auto model = tiny_model(bert_json(), 1);
  const auto before = model->forward(tiny_input(*model)).logits;
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 4, 2, {"query", "value"}));
  for (auto* u : tuning->updates()) {
    EXPECT_EQ(u->lora_B.abs().max().item<float>(), 0.0f);
    EXPECT_EQ(u->sparse_values.abs().max().item<float>(), 0.0f);
  }
  EXPECT_EQ(max_abs(model->forward(tiny_input(*model)).logits, before), 0.0);
}

TEST(TuningForward, InitialADrawsFromTheSeededGeneratorInAdaptedOrder) {
  auto model = tiny_model(bert_json(), 1);
  auto tuning = tuning_attach(*model, dsee_options(4), random_omega(*model, 4, 2, {"query", "value"}));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(7);
  for (auto* u : tuning->updates()) {
    const auto expected = at::randn({4, 24}, generator, at::kFloat) * 0.02;
    EXPECT_TRUE(at::equal(u->lora_A.detach(), expected)) << u->matrix.prefix;
  }
  EXPECT_NEAR(tuning->updates()[0]->lora_A.std().item<double>(), 0.02, 0.006);
}

TEST(TuningForward, DropoutActsOnlyInTraining) {
  auto model = tiny_model(bert_json(), 1);
  auto options = dsee_options();
  options.dropout = 0.5;
  auto tuning = tuning_attach(*model, options, random_omega(*model, 4, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  auto& q = model->linear("encoder.layer.0.attention.self.query");
  const auto x = at::randn({3, 24});
  const auto eval = q.forward(x);
  const auto expected =
      at::linear(x.to(at::kDouble), q.weight.to(at::kDouble) + dense_delta(*tuning, q), q.bias.to(at::kDouble));
  EXPECT_LT(max_abs(eval, expected), 2e-5);
  tuning->set_training(true);
  EXPECT_GT(max_abs(q.forward(x), eval), 1e-3);
  tuning->set_training(false);
  EXPECT_EQ(max_abs(q.forward(x), eval), 0.0);
}

// With a mask, mask_update and dropout in training the forward takes the
// split form x·(W⊙M)ᵀ + b + drop(x)·(ΔW⊙M)ᵀ; at a dropout rate of 1e-12 (no
// element dropped) it must equal the fused evaluation forward.
TEST(TuningForward, MaskedSplitFormWithDropoutEqualsFusedForm) {
  auto model = tiny_model(bert_json(), 1);
  auto options = dsee_options();
  options.dropout = 1e-12;
  auto tuning = tuning_attach(*model, options, random_omega(*model, 4, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  random_masks(*model, 4);
  auto& q = model->linear("encoder.layer.0.attention.self.query");
  const auto x = at::randn({3, 24});
  const auto fused = q.forward(x);
  tuning->set_training(true);
  const auto split = q.forward(x);
  EXPECT_LT(max_abs(split, fused), 1e-5);
  const auto w = (q.weight.to(at::kDouble) + dense_delta(*tuning, q)) * q.mask.to(at::kDouble);
  EXPECT_LT(max_abs(fused, at::linear(x.to(at::kDouble), w, q.bias.to(at::kDouble))), 2e-5);
}

TEST(TuningForward, Gpt2QvThirdsLeaveKeyRowsUnchanged) {
  auto model = tiny_model(gpt2_json(), 1);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 6, 2, {"c_attn:q", "c_attn:v"}));
  randomise_updates(*tuning, 3);
  auto& c_attn = model->linear("h.1.attn.c_attn");
  const auto x = at::randn({2, 3, 24});
  const auto wrapped = c_attn.forward(x), frozen = c_attn.forward_frozen(x);
  EXPECT_TRUE(at::equal(wrapped.narrow(-1, 24, 24), frozen.narrow(-1, 24, 24)));
  EXPECT_GT(max_abs(wrapped.narrow(-1, 0, 24), frozen.narrow(-1, 0, 24)), 1e-3);
  EXPECT_GT(max_abs(wrapped.narrow(-1, 48, 24), frozen.narrow(-1, 48, 24)), 1e-3);
}

TEST(TuningForward, Bf16ModelKeepsFp32TrainableState) {
  auto model = tiny_model(bert_json(), 1);
  auto options = dsee_options();
  auto bf16 = std::make_unique<EncoderModel>(model->config(), true, at::kBFloat16, at::kCPU);
  auto slots = bf16->tensor_slots();
  auto source = model->tensor_slots();
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i].tensor->copy_(*source[i].tensor);
  auto tuning = tuning_attach(*bf16, options, random_omega(*bf16, 4, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  for (auto* u : tuning->updates()) EXPECT_EQ(u->lora_A.scalar_type(), at::kFloat);
  const auto logits = bf16->forward(tiny_input(*bf16)).logits;
  EXPECT_EQ(logits.scalar_type(), at::kFloat);  // the trainable head is fp32 (docs/precision.md)
  logits.to(at::kFloat).sum().backward();
  for (auto* u : tuning->updates()) {
    ASSERT_TRUE(u->lora_A.grad().defined());
    EXPECT_EQ(u->lora_A.grad().scalar_type(), at::kFloat);
    EXPECT_GT(u->lora_A.grad().abs().max().item<float>(), 0.0f);
  }
}

TEST(TuningGrad, FrozenTensorsGetNoGradient) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    auto model = tiny_model(json, 1);
    const auto patterns = default_target_modules(model->config().family);
    auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 4, 2, patterns));
    randomise_updates(*tuning, 3);
    model->forward(tiny_input(*model)).logits.pow(2).sum().backward();
    std::set<const void*> trainable;
    for (const auto& [name, t] : tuning->trainable_parameters()) {
      trainable.insert(t.unsafeGetTensorImpl());
      ASSERT_TRUE(t.grad().defined()) << name;
      EXPECT_GT(t.grad().abs().max().item<float>(), 0.0f) << name;
    }
    for (const auto& slot : model->tensor_slots()) {
      if (trainable.contains(slot.tensor->unsafeGetTensorImpl())) continue;
      EXPECT_FALSE(slot.tensor->requires_grad()) << slot.name;
      EXPECT_FALSE(slot.tensor->grad().defined()) << slot.name;
    }
  }
}

// d loss / d t[i] by central differences (fp64), t a trainable leaf.
double central_difference(at::Tensor& t, std::int64_t i, const std::function<at::Tensor()>& loss) {
  const double eps = 1e-6;
  at::NoGradGuard no_grad;
  auto value = t.view({-1}).select(0, i);
  const double original = value.item<double>();
  value.fill_(original + eps);
  const double up = loss().item<double>();
  value.fill_(original - eps);
  const double down = loss().item<double>();
  value.fill_(original);
  return (up - down) / (2 * eps);
}

// Every S value and a few entries of A and B, for BERT (plain, and masked
// with mask_update) and GPT-2's c_attn thirds, all in fp64.
TEST(TuningGrad, GradientsMatchCentralFiniteDifferences) {
  for (int variant = 0; variant < 3; ++variant) {
    const bool gpt2 = variant == 2;
    auto config = model_config_parse(gpt2 ? gpt2_json() : bert_json(), "tiny/config.json");
    std::unique_ptr<PretrainedModel> model;
    if (gpt2)
      model = std::make_unique<Gpt2Model>(config, at::kDouble, at::kCPU);
    else
      model = std::make_unique<EncoderModel>(config, true, at::kDouble, at::kCPU);
    randomise(*model, 1);
    const auto patterns = default_target_modules(config.family);
    auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 5, 2, patterns));
    randomise_updates(*tuning, 3);
    if (variant == 1) random_masks(*model, 4);
    const auto input = tiny_input(*model);
    at::manual_seed(5);
    const auto weights = at::randn(model->forward(input).logits.sizes(), at::kDouble);
    auto loss = [&] { return (model->forward(input).logits * weights).sum(); };
    loss().backward();
    int checked = 0;
    for (auto* u : tuning->updates()) {
      ASSERT_EQ(u->sparse_values.scalar_type(), at::kDouble);
      for (auto* t : {&u->sparse_values, &u->lora_A, &u->lora_B}) {
        const auto count = t == &u->sparse_values ? t->numel() : std::int64_t(3);
        for (std::int64_t i = 0; i < count; ++i) {
          const auto index = i * (t->numel() / count);
          const double numeric = central_difference(*t, index, loss);
          const double analytic = t->grad().view({-1})[index].item<double>();
          EXPECT_NEAR(analytic, numeric, 1e-7 + 1e-6 * std::abs(numeric))
              << u->matrix.prefix << " variant " << variant << " entry " << index;
          ++checked;
        }
      }
    }
    EXPECT_EQ(checked, int(tuning->updates().size()) * (5 + 6));
  }
}

TEST(TuningShrink, KeepRowsReindexesOmegaAndKeepsTheirOutputs) {
  auto model = tiny_model(gpt2_json(), 1);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 40, 2, {"c_attn:q", "c_attn:v"}));
  randomise_updates(*tuning, 3);
  auto& c_attn = model->linear("h.0.attn.c_attn");
  const auto x = at::randn({2, 3, 24});
  const auto before = c_attn.forward(x);
  const auto delta_before = dense_delta(*tuning, c_attn);
  // Head 1 (rows 6..11 of each third) removed.
  std::vector<std::int64_t> kept;
  for (std::int64_t third = 0; third < 3; ++third)
    for (std::int64_t r = 0; r < 24; ++r)
      if (r / 6 != 1) kept.push_back(third * 24 + r);
  const auto rows = at::tensor(kept, at::kLong);
  c_attn.keep_rows(rows);
  EXPECT_LT(max_abs(c_attn.forward(x), before.index_select(-1, rows)), 1e-5);
  EXPECT_TRUE(at::allclose(dense_delta(*tuning, c_attn), delta_before.index_select(0, rows)));
  const auto updates = tuning->updates();
  EXPECT_EQ(updates[0]->matrix.row_offset, 0);
  EXPECT_EQ(updates[0]->matrix.rows, 18);
  EXPECT_EQ(updates[1]->matrix.row_offset, 36);
  EXPECT_EQ(updates[1]->matrix.rows, 18);
  for (auto* u : {updates[0], updates[1]}) {
    EXPECT_EQ(u->lora_B.size(0), 18);
    EXPECT_TRUE(u->lora_B.is_leaf() && u->lora_B.requires_grad());
    EXPECT_TRUE(u->sparse_values.is_leaf() && u->sparse_values.requires_grad());
    EXPECT_EQ(u->omega.numel(), u->sparse_values.numel());
    EXPECT_LT(u->omega.numel(), 40);  // entries of head 1 dropped (40 of 576 positions: some land there)
    EXPECT_TRUE(at::equal(u->omega, std::get<0>(u->omega.sort())));
    EXPECT_LT(u->omega.max().item<std::int64_t>(), 18 * 24);
  }
}

TEST(TuningShrink, PruneHeadsShrinksBertUpdates) {
  auto model = tiny_model(bert_json(), 1);
  auto tuning = tuning_attach(*model, dsee_options(), random_omega(*model, 30, 2, {"query", "value"}));
  randomise_updates(*tuning, 3);
  auto& q = model->linear("encoder.layer.1.attention.self.query");
  const auto x = at::randn({2, 24});
  const auto before = q.forward(x);
  model->prune_heads({{1, {0, 2}}});
  std::vector<std::int64_t> kept;
  for (std::int64_t r = 0; r < 24; ++r)
    if (r / 6 == 1 || r / 6 == 3) kept.push_back(r);
  EXPECT_LT(max_abs(q.forward(x), before.index_select(-1, at::tensor(kept, at::kLong))), 1e-5);
  EXPECT_EQ(tuning->updates()[2]->lora_B.size(0), 12);
  EXPECT_EQ(tuning->updates()[0]->lora_B.size(0), 24);  // layer 0 untouched
  // The whole model still runs and differentiates.
  model->forward(tiny_input(*model)).logits.sum().backward();
  EXPECT_TRUE(tuning->trainable_parameters()[6].tensor.grad().defined());
}

TEST(TuningShrink, KeepColumnsReindexesOmegaAndMatchesZeroedInputs) {
  auto model = tiny_model(bert_json(), 1);
  auto options = dsee_options();
  options.target_modules = {"attention.output.dense"};
  auto tuning = tuning_attach(*model, options, random_omega(*model, 40, 2, options.target_modules));
  randomise_updates(*tuning, 3);
  auto& out = model->linear("encoder.layer.0.attention.output.dense");
  const auto x = at::randn({2, 24});
  std::vector<std::int64_t> kept;
  for (std::int64_t c = 0; c < 24; ++c)
    if (c / 6 != 2) kept.push_back(c);
  const auto columns = at::tensor(kept, at::kLong);
  auto zeroed = x.clone();
  zeroed.narrow(1, 12, 6).zero_();
  const auto before = out.forward(zeroed);
  const auto delta_before = dense_delta(*tuning, out);
  out.keep_columns(columns);
  EXPECT_LT(max_abs(out.forward(x.index_select(1, columns)), before), 1e-5);
  EXPECT_TRUE(at::allclose(dense_delta(*tuning, out), delta_before.index_select(1, columns)));
  auto* u = tuning->updates()[0];
  EXPECT_EQ(u->lora_A.size(1), 18);
  EXPECT_LT(u->omega.numel(), 40);
  EXPECT_LT(u->omega.max().item<std::int64_t>(), 24 * 18);
}

TEST(TuningMerge, MergedModelGivesTheWrappedLogits) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    for (int variant = 0; variant < 3; ++variant) {  // no mask; mask + mask_update; mask + reference
      auto model = tiny_model(json, 1);
      auto options = dsee_options();
      options.mask_update = variant != 2;
      const auto patterns = default_target_modules(model->config().family);
      auto tuning = tuning_attach(*model, options, random_omega(*model, 5, 2, patterns));
      randomise_updates(*tuning, 3);
      if (variant > 0) random_masks(*model, 4);
      const auto input = tiny_input(*model);
      const auto wrapped = model->forward(input).logits.detach();
      model_merge(*model);
      for (auto& [name, linear] : model->linears()) {
        EXPECT_FALSE(linear->tuning) << name;
        EXPECT_FALSE(linear->mask.defined()) << name;
      }
      const auto merged = model->forward(input).logits;
      // fp32 rounding differs between x·Wᵀ + x·ΔWᵀ and x·(W + ΔW)ᵀ: relative to the logits' scale.
      const auto scale = wrapped.abs().max().item<double>();
      const auto deviation = max_abs(merged, wrapped) / scale;
      EXPECT_LT(deviation, 1e-6) << json["model_type"] << " variant " << variant;
      EXPECT_GT(scale, 0.05);
      std::printf("merge %s variant %d: max |merged - wrapped| / max |wrapped| = %.2e (scale %.2f)\n",
                  json["model_type"].get<std::string>().c_str(), variant, deviation, scale);
    }
  }
}

TEST(TuningMerge, EffectiveWeightOfUnwrappedProjections) {
  auto model = tiny_model(bert_json(), 1);
  auto& k = model->linear("encoder.layer.0.attention.self.key");
  EXPECT_TRUE(at::equal(effective_weight(k), k.weight));
  random_masks(*model, 4);
  EXPECT_TRUE(at::equal(effective_weight(k), k.weight * k.mask));
}

TEST(TuningParameters, NamesOrderAndFreezing) {
  auto bert = tiny_model(bert_json(), 1);
  auto tuning = tuning_attach(*bert, dsee_options(), random_omega(*bert, 4, 2, {"query", "value"}));
  std::vector<std::string> names;
  for (const auto& p : tuning->trainable_parameters()) names.push_back(p.name);
  std::vector<std::string> expected;
  for (int layer = 0; layer < 2; ++layer)
    for (const char* m : {"query", "value"})
      for (const char* t : {"lora_A", "lora_B", "sparse_values"})
        expected.push_back(fmt::format("encoder.layer.{}.attention.self.{}.{}", layer, m, t));
  expected.push_back("classifier.weight");
  expected.push_back("classifier.bias");
  EXPECT_EQ(names, expected);
  EXPECT_FALSE(bert->linear("pooler.dense").weight.requires_grad());
  EXPECT_TRUE(bert->linear("classifier").weight.requires_grad());

  auto roberta = tiny_model(roberta_json(), 1);
  TuningOptions lora = dsee_options();
  lora.method = TuningMethod::lora;
  auto rt = tuning_attach(*roberta, lora);
  names.clear();
  for (const auto& p : rt->trainable_parameters()) names.push_back(p.name);
  ASSERT_EQ(names.size(), 2 * 2 * 2 + 4u);
  EXPECT_EQ(names[0], "encoder.layer.0.attention.self.query.lora_A");
  EXPECT_EQ(names[1], "encoder.layer.0.attention.self.query.lora_B");
  EXPECT_EQ(names[2], "encoder.layer.0.attention.self.value.lora_A");
  EXPECT_EQ(std::vector<std::string>(names.end() - 4, names.end()),
            (std::vector<std::string>{"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                                      "classifier.out_proj.bias"}));

  auto gpt2 = tiny_model(gpt2_json(), 1);
  auto gt = tuning_attach(*gpt2, dsee_options(), random_omega(*gpt2, 4, 2, {"c_attn:q", "c_attn:v"}));
  const auto gp = gt->trainable_parameters();
  ASSERT_EQ(gp.size(), 3u * 2 * 3);
  EXPECT_EQ(gp[0].name, "h.0.attn.c_attn:q.lora_A");
  EXPECT_EQ(gp[5].name, "h.0.attn.c_attn:v.sparse_values");
  for (const auto& slot : gpt2->tensor_slots()) EXPECT_FALSE(slot.tensor->requires_grad()) << slot.name;

  auto full_model = tiny_model(gpt2_json(), 1);
  TuningOptions full;
  full.method = TuningMethod::full;
  auto ft = tuning_attach(*full_model, full);
  const auto fp = ft->trainable_parameters();
  const auto slots = full_model->tensor_slots();
  ASSERT_EQ(fp.size(), slots.size());
  for (std::size_t i = 0; i < fp.size(); ++i) {
    EXPECT_EQ(fp[i].name, slots[i].name);
    EXPECT_TRUE(fp[i].tensor.requires_grad());
  }
  EXPECT_TRUE(ft->updates().empty());
}

TEST(TuningAttach, UserErrorsNameTheProblem) {
  auto model = tiny_model(bert_json(), 1);
  const auto omega = random_omega(*model, 4, 2, {"query", "value"});
  auto options = dsee_options();
  options.rank = 0;
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, omega); }), "rank must be positive"));

  options = dsee_options();
  options.method = TuningMethod::lora;
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, omega); }), "method lora has no sparse part"));

  options = dsee_options();
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, {omega[0]}); }),
                       "'encoder.layer.0.attention.self.value.weight' has none"));
  auto wrong = omega;
  wrong[1].cols = 12;
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, wrong); }), "is for a 24×12 matrix"));
  wrong = omega;
  wrong[2].indices = at::tensor(std::vector<std::int64_t>{5, 3}, at::kLong);
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, wrong); }), "strictly ascending"));
  wrong = omega;
  wrong[2].indices = at::tensor(std::vector<std::int64_t>{3, 24 * 24}, at::kLong);
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, wrong); }), "outside [0, 576)"));
  wrong = random_omega(*model, 4, 2, {"query", "value", "key"});
  EXPECT_TRUE(
      contains(error_of([&] { tuning_attach(*model, options, wrong); }), "which target_modules does not adapt"));

  EXPECT_TRUE(contains(error_of([] { tuning_method_from_name("prompt"); }),
                       "expected dsee, lora, full, bitfit, top_k, adapter or prefix"));
  EXPECT_EQ(tuning_method_from_name("lora"), TuningMethod::lora);

  tuning_attach(*model, options, omega);
  EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options, omega); }), "already has a tuning method"));

  // lora takes an Ω with c = 0 (as `dsee omega --c 0` writes) and lists no sparse values.
  auto lora_model = tiny_model(bert_json(), 1);
  options = dsee_options();
  options.method = TuningMethod::lora;
  auto lora = tuning_attach(*lora_model, options, random_omega(*lora_model, 0, 2, {"query", "value"}));
  EXPECT_EQ(lora->trainable_parameters().size(), 4u * 2 + 2);
  for (auto* u : lora->updates()) EXPECT_EQ(u->omega.numel(), 0);
}

}  // namespace
}  // namespace dsee
