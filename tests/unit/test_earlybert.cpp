// EarlyBERT (prune.kind = earlybert; docs/tuning.md, 'EarlyBERT') and the
// feed-forward neuron surgery it needs: removed neurons leave the function of
// the model with those neurons' output columns zeroed; masks.h5 carries the
// neurons; dsee count of a pruned BERT-base equals the hand count; the plan
// takes the lowest |c| per layer; a demo run learns, resumes and exports.
// The coefficients' gradients against transformers: tests/parity/test_earlybert.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>

#include "core/sparsity/earlybert.h"
#include "core/sparsity/prune_plan.h"
#include "core/sparsity/pruning.h"
#include "core/tuning/counting.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::run_dsee;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The logits of `model` on a fixed batch (evaluation, no gradient).
at::Tensor logits_of(PretrainedModel& model) {
  at::NoGradGuard no_grad;
  ModelInput input;
  input.input_ids = at::tensor({3, 7, 11, 2, 9, 4, 1, 8, 5, 6, 12, 13}, at::kLong).view({2, 6});
  return model.forward(input).logits;
}

// Removing neurons equals zeroing their columns of the second feed-forward
// projection in an unpruned copy (their rows of the first then feed nothing).
void expect_neuron_removal_is_zeroed_columns(const nlohmann::json& json,
                                             const std::map<std::int64_t, std::vector<std::int64_t>>& neurons) {
  auto pruned = tiny_model(json, 7);
  auto zeroed = tiny_model(json, 7);
  const auto width = pruned->config().intermediate_size;
  const auto removed = std::int64_t(neurons.begin()->second.size());
  pruned->prune_neurons(neurons);
  for (const auto& [layer, ids] : neurons) {
    const auto [in, out] = zeroed->feed_forward_modules(layer);
    zeroed->linear(out).weight.index_fill_(1, at::tensor(ids, at::kLong), 0.0);
    EXPECT_EQ(pruned->linear(in).weight.sizes(), (at::IntArrayRef{width - removed, 24})) << in;
    EXPECT_EQ(pruned->linear(in).bias.size(0), width - removed) << in;
    EXPECT_EQ(pruned->linear(out).weight.sizes(), (at::IntArrayRef{24, width - removed})) << out;
    const auto kept = pruned->kept_neurons(layer);
    EXPECT_EQ(std::int64_t(kept.size()), width - removed);
    for (const auto id : ids) EXPECT_FALSE(std::binary_search(kept.begin(), kept.end(), id)) << id;
  }
  EXPECT_EQ(pruned->config().intermediate_size, width - removed);
  EXPECT_TRUE(at::allclose(logits_of(*pruned), logits_of(*zeroed), 1e-5, 1e-6));
}

TEST(NeuronPruning, BertEqualsZeroedColumnsAndShrinksShapes) {
  expect_neuron_removal_is_zeroed_columns(bert_json(), {{0, {1, 5, 7}}, {1, {0, 2, 29}}});
}

TEST(NeuronPruning, Gpt2EqualsZeroedColumnsAndShrinksShapes) {
  expect_neuron_removal_is_zeroed_columns(gpt2_json(), {{0, {3, 40, 95}}, {1, {0, 1, 2}}, {2, {10, 20, 30}}});
}

TEST(NeuronPruning, AgainIgnoresRemovedIdsAndRefusesBadPlansUnchanged) {
  auto model = tiny_model(bert_json(), 3);
  model->prune_neurons({{0, {1, 5}}, {1, {0, 2}}});
  model->prune_neurons({{0, {1, 5, 6}}, {1, {0, 2, 3}}});  // 1, 5 / 0, 2 are gone: one more each
  EXPECT_EQ(model->config().intermediate_size, 27);
  EXPECT_EQ(model->kept_neurons(0).front(), 0);
  EXPECT_EQ(model->kept_neurons(1).front(), 1);

  EXPECT_TRUE(contains(error_of([&] {
                         model->prune_neurons({{0, {8}}});
                       }),
                       "layer 1 would keep 27 feed-forward neurons and layer 0 26; every layer must keep the same "
                       "number"));
  EXPECT_TRUE(contains(error_of([&] {
                         model->prune_neurons({{0, {30}}, {1, {30}}});
                       }),
                       "layer 0 has no feed-forward neuron 30 (the model was built with 30: ids 0..29)"));
  EXPECT_TRUE(contains(error_of([&] { model->prune_neurons({{2, {0}}}); }), "no layer 2 (the model has 2)"));
  EXPECT_EQ(model->linear("encoder.layer.0.intermediate.dense").out_features(), 27);  // unchanged by the refusals
  EXPECT_EQ(model->config().intermediate_size, 27);
}

TEST(NeuronPruning, PlanFileRoundTripsNeuronsBesideHeads) {
  const fs::path dir = fs::temp_directory_path() / ("dsee-earlybert-plan-" + std::to_string(getpid()));
  fs::create_directories(dir);
  PrunePlan plan;
  plan.heads = {{0, {1}}, {1, {0, 3}}};
  plan.neurons = {{0, {2, 4, 9}}, {1, {0, 1, 29}}};
  prune_plan_write(dir / "masks.h5", plan);
  const auto read = prune_plan_read(dir / "masks.h5");
  EXPECT_EQ(read.heads, plan.heads);
  EXPECT_EQ(read.neurons, plan.neurons);
  EXPECT_TRUE(read.masks.empty());

  PrunePlan heads_only;  // a plan without neurons is the file older versions wrote
  heads_only.heads = {{0, {2}}};
  prune_plan_write(dir / "heads.h5", heads_only);
  EXPECT_TRUE(prune_plan_read(dir / "heads.h5").neurons.empty());

  PrunePlan bad;
  bad.neurons = {{0, {4, 2}}};
  EXPECT_TRUE(contains(error_of([&] { prune_plan_write(dir / "bad.h5", bad); }),
                       "neurons of layer 0: neuron ids must be strictly ascending (2 after 4)"));
  std::system(("rm -rf '" + dir.string() + "'").c_str());
}

TEST(ModelCount, EarlyBertPrunedBertBaseByHand) {
  // BERT-base less 4 heads (of 12) and 1228 neurons (of 3072) in every layer:
  // q, k, v [512, 768], attention output [768, 512], intermediate [1844, 768],
  // output [768, 1844]. L = 128.
  auto model = model_on_meta(model_config_parse(bert_base_json(), "bert-base/config.json"), true);
  PrunePlan plan;
  std::vector<std::int64_t> neurons(1228);
  for (std::int64_t i = 0; i < 1228; ++i) neurons[std::size_t(i)] = 2 * i;  // every other of the first 2456
  for (std::int64_t layer = 0; layer < 12; ++layer) {
    plan.heads[layer] = {0, 3, 7, 11};
    plan.neurons[layer] = neurons;
  }
  prune_plan_apply(*model, plan);
  const std::int64_t L = 128, h = 768, a = 512, f = 1844;
  const auto count = model_count(*model, L);
  const std::int64_t layer_flops = 2 * L * (3 * a * h + h * a + 2 * h * f) + 8 * 2 * 2 * L * L * 64;
  EXPECT_EQ(count.flops_dense, 12 * layer_flops + 2 * h * h + 2 * 2 * h);
  EXPECT_EQ(count.flops_dense, 13936757760);
  // 109,483,778 less, per layer, 256 rows of q, k, v (weight and bias), 256
  // columns of the attention output, 1228 rows of intermediate (and bias) and
  // 1228 columns of output.
  const std::int64_t removed = 3 * 256 * (h + 1) + h * 256 + 1228 * (h + 1) + h * 1228;
  EXPECT_EQ(count.parameters, 109483778 - 12 * removed);
  EXPECT_EQ(count.parameters, 77388146);
  EXPECT_EQ(count.heads_per_layer, std::vector<std::int64_t>(12, 8));
  EXPECT_EQ(model_config_to_json(model->config(), "float32")["intermediate_size"], 1844);
}

TEST(EarlyBert, PlanRemovesTheLowestAbsoluteCoefficientsTiesToTheLowerId) {
  auto model = tiny_model(bert_json(), 1);
  auto c = earlybert_coefficients(*model, true, true);
  {
    at::NoGradGuard no_grad;
    c.heads[0].copy_(at::tensor({0.5, -0.25, 0.25, 2.0}));  // |c| ties 1 and 2: 1 goes first
    c.heads[1].copy_(at::tensor({3.0, 2.0, -1.0, 4.0}));
    c.neurons[0].copy_(at::arange(30, at::kFloat).flip(0));  // 29 … 0: the last ids are the lowest
    c.neurons[1].fill_(1.0);                                 // all tied: the first ids go
  }
  const auto plan = earlybert_plan(*model, c, 1, 3);
  EXPECT_EQ(plan.heads.at(0), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(plan.heads.at(1), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(plan.neurons.at(0), (std::vector<std::int64_t>{27, 28, 29}));
  EXPECT_EQ(plan.neurons.at(1), (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_TRUE(contains(error_of([&] { earlybert_plan(*model, c, 4, 0); }),
                       "cannot remove 4 heads from layer 0: it has 4 (at least one must stay)"));
  auto heads_only = earlybert_coefficients(*model, true, false);
  EXPECT_TRUE(contains(error_of([&] { earlybert_plan(*model, heads_only, 1, 2); }),
                       "2 neurons per layer to remove, but the search had no neuron coefficients"));
}

std::string earlybert_run(const fs::path& out) {
  return "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
         " --set 'run.compare=[]' --set tuning.method=full --set train.lr=1e-3 --set task.train_size=512"
         " --set task.dev_size=128 --set train.epochs=2 --set prune.kind=earlybert --set prune.heads_per_layer=1"
         " --set prune.neurons_per_layer=64 --set prune.search_steps=16 --set prune.l1=1e-3 --set retune.epochs=2"
         " --set export.format=hf";
}

nlohmann::json summary_of(const fs::path& dir) { return nlohmann::json::parse(file_text(dir / "summary.json")); }

// The demo model (hidden 64, 8 heads, intermediate 128, 2 layers) less 1
// head and 64 neurons per layer learns above its untuned accuracy (0.66;
// measured 0.84), counts as pruned, exports a folder dsee count reads the
// same, and a run stopped in train and resumed ends byte for byte where the
// straight run ends (the search, its plan and the retune included).
TEST(EarlyBert, DemoRunLearnsCountsExportsAndResumes) {
  const fs::path out = fs::temp_directory_path() / ("dsee-earlybert-" + std::to_string(getpid()));
  const auto straight = run_dsee(earlybert_run(out / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto dir = out / "straight" / "demo";
  const auto summary = summary_of(dir);
  const double untuned = summary["stages"]["pretrained"]["dev"]["accuracy"].get<double>();
  EXPECT_GT(summary["dev"]["accuracy"].get<double>(), untuned + 0.05);
  EXPECT_EQ(summary["stages"]["prune"]["search"]["steps"], 16);
  const auto plan = prune_plan_read(dir / "masks.h5");
  ASSERT_EQ(plan.heads.size(), 2u);
  ASSERT_EQ(plan.neurons.size(), 2u);
  for (const auto& [layer, ids] : plan.neurons) EXPECT_EQ(ids.size(), 64u) << layer;
  for (const auto& [layer, ids] : plan.heads) EXPECT_EQ(ids.size(), 1u) << layer;
  // The demo model has 8 heads of 8: per layer 8 rows of q, k, v (and
  // biases), 8 columns of the attention output, 64 rows of intermediate (and
  // biases) and 64 columns of output.
  const std::int64_t removed = 3 * 8 * 65 + 64 * 8 + 64 * 65 + 64 * 64;
  const auto pretrained = model_load(dir / "data" / "pretrained");
  const std::int64_t parameters = model_count(*pretrained, 16).parameters - 2 * removed;
  EXPECT_EQ(parameters, 69266);
  EXPECT_EQ(summary["nonzero_parameters"].get<std::int64_t>(), parameters);
  const auto count = run_dsee("count --model " + (dir / "export").string() + " --method full");
  ASSERT_EQ(count.exit_code, 0) << count.output;
  EXPECT_TRUE(contains(count.output, "heads per layer 7 7)")) << count.output;
  EXPECT_TRUE(contains(count.output, "parameters total     69,266\n")) << count.output;
  const auto exported = model_load(dir / "export");
  EXPECT_EQ(exported->config().intermediate_size, 64);
  const auto seq_len =
      nlohmann::json::parse(file_text(dir / "data" / "demo.json"))["options"]["spec"]["seq_len"].get<std::int64_t>();
  EXPECT_EQ(summary["flops_dense"].get<std::int64_t>(), model_count(*exported, seq_len).flops_dense);

  const auto stopped = run_dsee(earlybert_run(out / "stopped"), "DSEE_TEST_STOP_AFTER_STEP=20 ");
  ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
  const auto resumed = run_dsee(earlybert_run(out / "stopped"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming train from ckpt/step-20.h5")) << resumed.output;
  const auto stopped_dir = out / "stopped" / "demo";
  EXPECT_EQ(file_text(dir / "earlybert.safetensors"), file_text(stopped_dir / "earlybert.safetensors"));
  EXPECT_EQ(file_text(dir / "trainable-retune.safetensors"), file_text(stopped_dir / "trainable-retune.safetensors"));
  EXPECT_EQ(summary_of(stopped_dir)["dev"], summary["dev"]);

  // A finished run run again loads masks.h5 instead of searching.
  const auto again = run_dsee(earlybert_run(out / "straight"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_FALSE(contains(again.output, "EarlyBERT search")) << again.output;
  EXPECT_EQ(summary_of(dir)["dev"], summary["dev"]);
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

// An EarlyBERT arm of the demo's run.compare runs beside full fine-tuning
// and shows in the comparison table.
TEST(EarlyBert, RunsAsACompareArm) {
  const fs::path out = fs::temp_directory_path() / ("dsee-earlybert-arms-" + std::to_string(getpid()));
  const auto r =
      run_dsee("run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
               " --set task.train_size=128 --set task.dev_size=64 --set train.epochs=1"
               " --set run.compare_seeds=1 --set 'run.compare=[\"full: tuning.method=full train.lr=1e-3\","
               " \"earlybert: tuning.method=full train.lr=1e-3 prune.kind=earlybert prune.heads_per_layer=1"
               " prune.neurons_per_layer=32 prune.search_steps=4 retune.epochs=1\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto arms = summary_of(out / "demo")["arms"];
  ASSERT_EQ(arms.size(), 2u);
  EXPECT_EQ(arms[1]["summary"]["prune"], "earlybert");
  EXPECT_LT(arms[1]["summary"]["flops_dense"].get<std::int64_t>(),
            arms[0]["summary"]["flops_dense"].get<std::int64_t>());
  EXPECT_TRUE(contains(r.output, "\nearlybert ")) << r.output;
  EXPECT_EQ(prune_plan_read(out / "demo" / "earlybert" / "masks.h5").neurons.at(1).size(), 32u);
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(EarlyBert, DataToTextTasksAndScaledUpdatesAreRefused) {
  const fs::path out = fs::temp_directory_path() / ("dsee-earlybert-refused-" + std::to_string(getpid()));
  const auto lora =
      run_dsee("run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
               " --set 'run.compare=[]' --set tuning.method=lora --set task.train_size=64"
               " --set task.dev_size=32 --set train.epochs=1 --set prune.kind=earlybert"
               " --set 'tuning.target_modules=[\"query\", \"output.dense\"]'");
  EXPECT_EQ(lora.exit_code, 1) << lora.output;
  EXPECT_TRUE(contains(lora.output, "prune.kind = earlybert: tuning.target_modules adapts")) << lora.output;
  // Refused before the run starts (no data or model is read).
  const auto nlg =
      run_dsee("run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
               "/nlg --set 'run.compare=[]' --set task.name=e2e --set task.data_dir=/none" +
               " --set model.path=/none --set prune.kind=earlybert");
  EXPECT_EQ(nlg.exit_code, 1) << nlg.output;
  EXPECT_TRUE(contains(nlg.output, "task.name = e2e is a data-to-text task. Use prune.kind = heads")) << nlg.output;
  EXPECT_FALSE(fs::exists(out / "nlg" / "demo" / "config.toml"));
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
