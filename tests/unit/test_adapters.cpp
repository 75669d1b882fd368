// Houlsby adapters (core/tuning/tuning.h, tuning.method adapter): trainable
// counts of BERT-base and GPT-2-medium by hand (PEFT has no Houlsby adapter,
// so there is no library count to compare with), the model at
// initialisation equal to the base model, the adapter formula on one
// projection, and `dsee run` on the shrunken demo: it learns above the
// untuned model, resumes from a checkpoint to the straight run's tensors,
// starts another run through tuning.init_from (the same adapter_size only),
// runs as a run.compare arm beside lora, learns in bf16 (with fp32 adapters,
// LayerNorms and head), and refuses pruning and PEFT export.
// tests/parity/test_adapters.py checks logits and gradients against
// transformers with forward hooks, and the hf export with docs/export.md's
// snippet.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

#include "core/io/safetensors.h"
#include "core/tuning/counting.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::run_dsee;

TuningOptions adapter_options(std::int64_t size = 64) {
  TuningOptions options;
  options.method = TuningMethod::adapter;
  options.adapter_size = size;
  options.seed = 3;
  return options;
}

TEST(Adapters, BertBaseAndGpt2MediumCountsByHand) {
  const std::int64_t m = 64;
  // BERT-base: 24 adapters on 768-wide outputs, 2·768·64 + 64 + 768 each;
  // 25 LayerNorms (embeddings, two per layer) of 2·768; the classifier.
  auto bert = model_on_meta(model_config_parse(bert_base_json(), "bert-base/config.json"), true);
  EXPECT_EQ(adapter_parameter_count(768, m), 99136);
  EXPECT_EQ(trainable_parameter_count(*bert, adapter_options(m), 0), 24 * 99136 + 25 * 1536 + 1538);
  EXPECT_EQ(trainable_parameter_count(*bert, adapter_options(m), 0), 2419202);
  auto no_norms = adapter_options(m);
  no_norms.adapter_train_layernorm = false;
  EXPECT_EQ(trainable_parameter_count(*bert, no_norms, 0), 24 * 99136 + 1538);

  // GPT-2-medium: 48 adapters on 1024-wide outputs; ln_1 and ln_2 per block
  // and ln_f (49 of 2·1024); no task head (the LM head is the tied wte).
  auto gpt2 = model_on_meta(model_config_parse(gpt2_medium_json(), "gpt2-medium/config.json"), false);
  EXPECT_EQ(adapter_parameter_count(1024, m), 132160);
  EXPECT_EQ(trainable_parameter_count(*gpt2, adapter_options(m), 0), 48 * 132160 + 49 * 2048);
  EXPECT_EQ(trainable_parameter_count(*gpt2, adapter_options(m), 0), 6444032);
}

ModelInput tiny_input(const PretrainedModel& model) {
  ModelInput in;
  const auto vocab = model.config().vocab_size;
  in.input_ids = at::arange(10, at::kLong).remainder(vocab).view({2, 5}) * 3 % vocab;
  return in;
}

// At initialisation (up = 0) the logits are the base model's; the trainable
// set is the adapters, every LayerNorm and the head, and nothing else
// requires grad; the counts agree; adapter_modules places two per layer.
TEST(Adapters, InitialisationIsTheBaseModelAndTheTrainableSet) {
  for (const auto& json : {bert_json(), roberta_json(), gpt2_json()}) {
    auto model = tiny_model(json, 4);
    const auto family = std::string(json["model_type"]);
    const auto before = model->forward(tiny_input(*model)).logits;
    auto tuning = tuning_attach(*model, adapter_options(5));
    const auto after = model->forward(tiny_input(*model)).logits;
    EXPECT_LT((after - before).abs().max().item<double>(), 1e-6) << family;

    const bool gpt2 = family == "gpt2";
    const auto modules = adapter_modules(*model);
    ASSERT_EQ(modules.size(), 2 * std::size_t(model->config().num_layers)) << family;
    EXPECT_EQ(modules[0], gpt2 ? "h.0.attn.c_proj" : "encoder.layer.0.attention.output.dense");
    EXPECT_EQ(modules[1], gpt2 ? "h.0.mlp.c_proj" : "encoder.layer.0.output.dense");

    std::set<std::string> names;
    for (const auto& [name, tensor] : tuning->trainable_parameters()) {
      names.insert(name);
      EXPECT_TRUE(tensor.requires_grad()) << name;
    }
    EXPECT_TRUE(names.contains(modules[1] + ".adapter.down.weight")) << family;
    EXPECT_TRUE(names.contains(modules[1] + ".adapter.up.bias")) << family;
    std::size_t model_tensors = 0;
    for (const auto& slot : model->tensor_slots()) {
      const bool norm = slot.name.find("LayerNorm.") != std::string::npos || slot.name.starts_with("ln_f.") ||
                        slot.name.find(".ln_") != std::string::npos;
      const bool train = norm || slot.name.starts_with("classifier.");
      EXPECT_EQ(slot.tensor->requires_grad(), train) << slot.name;
      EXPECT_EQ(names.contains(slot.name), train) << slot.name;
      model_tensors += train;
    }
    EXPECT_EQ(names.size(), model_tensors + 4 * modules.size()) << family;
    EXPECT_EQ(trainable_parameter_count(*tuning), trainable_parameter_count(*model, adapter_options(5), 0));
  }
}

// y = h + up(act(down(h))) on one projection, with non-zero up weights;
// gradients reach the adapter and not the frozen weight; the seed draws
// down.weight as randn(m, d)·0.01 in adapter_modules order.
TEST(Adapters, ForwardIsTheBottleneckAfterTheProjection) {
  auto model = tiny_model(bert_json(), 5);
  auto options = adapter_options(3);
  options.adapter_activation = Activation::relu;
  auto tuning = tuning_attach(*model, options);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const auto first = at::randn({3, 24}, generator) * 0.01;
  auto parameters = tuning->trainable_parameters();
  ASSERT_EQ(parameters[0].name, "encoder.layer.0.attention.output.dense.adapter.down.weight");
  EXPECT_TRUE(at::equal(parameters[0].tensor, first));
  EXPECT_EQ(parameters[4].name, "encoder.layer.0.output.dense.adapter.down.weight");
  EXPECT_TRUE(at::equal(parameters[4].tensor, at::randn({3, 24}, generator) * 0.01));
  {
    at::NoGradGuard no_grad;
    for (std::size_t i = 1; i < 4; ++i) parameters[i].tensor.copy_(at::randn(parameters[i].tensor.sizes()));
  }
  auto& linear = model->linear("encoder.layer.0.attention.output.dense");
  const auto x = at::randn({2, 4, 24});
  const auto h = at::linear(x, linear.weight, linear.bias);
  const auto expected = h + at::linear(at::relu(at::linear(h, parameters[0].tensor, parameters[1].tensor)),
                                       parameters[2].tensor, parameters[3].tensor);
  const auto y = linear.forward(x);
  EXPECT_LT((y - expected).abs().max().item<double>(), 1e-5);
  y.sum().backward();
  EXPECT_TRUE(parameters[0].tensor.grad().defined());
  EXPECT_FALSE(linear.weight.requires_grad());
  // Adapters are not a weight update: the effective weight is the projection's.
  EXPECT_TRUE(at::equal(effective_weight(linear), linear.weight));
}

nlohmann::json summary_of(const fs::path& dir) { return nlohmann::json::parse(file_text(dir / "summary.json")); }

std::string adapter_run(const fs::path& out) {
  return "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
         " --set 'run.compare=[]' --set tuning.method=adapter --set tuning.adapter_size=16 --set train.lr=1e-2"
         " --set task.train_size=512 --set task.dev_size=128 --set train.epochs=4";
}

// The demo model: hidden 64, 2 layers, 2 labels: 4 adapters of
// 2·64·16 + 16 + 64 = 2128, 5 LayerNorms of 128, the classifier 130. Dev
// accuracy 0.80 against the untuned model's 0.66 (measured).
TEST(Adapters, DemoRunLearnsResumesAndRefuses) {
  const fs::path out = fs::temp_directory_path() / ("dsee-adapters-" + std::to_string(getpid()));
  const std::int64_t trainable = 4 * 2128 + 5 * 128 + 130;
  const auto straight = run_dsee(adapter_run(out / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto summary = summary_of(out / "straight" / "demo");
  const double untuned = summary["stages"]["pretrained"]["dev"]["accuracy"].get<double>();
  EXPECT_GT(summary["dev"]["accuracy"].get<double>(), untuned + 0.05);
  EXPECT_EQ(summary["method"], "adapter");
  EXPECT_EQ(summary["trainable_parameters"].get<std::int64_t>(), trainable);
  EXPECT_EQ(summary["stages"]["train"]["allreduce_bytes_per_step"].get<std::int64_t>(), 4 * trainable);
  const auto count = run_dsee("count --model " + (out / "straight" / "demo" / "data" / "pretrained").string() +
                              " --method adapter --adapter-size 16 --seq-len 8 --per-linear");
  ASSERT_EQ(count.exit_code, 0) << count.output;
  EXPECT_TRUE(contains(count.output, "trainable            9,282 (")) << count.output;
  EXPECT_TRUE(contains(count.output, "adapter m=16")) << count.output;
  // Each adapter runs [16, 64] and [64, 16] on the 8 tokens: 2·2·16·64·8 FLOPs.
  EXPECT_TRUE(contains(count.output, "encoder.layer.1.output.dense.adapter.up")) << count.output;
  EXPECT_TRUE(contains(count.output, "[64, 16] x8 tokens  non-zero 0  FLOPs 16,384")) << count.output;

  const auto stopped_dir = out / "stopped";
  const auto stopped = run_dsee(adapter_run(stopped_dir), "DSEE_TEST_STOP_AFTER_STEP=20 ");
  ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
  const auto resumed = run_dsee(adapter_run(stopped_dir));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming train from ckpt/step-20.h5 (step 20 of 64)")) << resumed.output;
  EXPECT_EQ(file_text(out / "straight" / "demo" / "trainable-train.safetensors"),
            file_text(stopped_dir / "demo" / "trainable-train.safetensors"));

  // tuning.init_from: an adapter run of the same adapter_size starts from the straight run's tensors.
  const auto from = run_dsee(adapter_run(out / "init") +
                             " --set train.epochs=1 --set tuning.init_from=" + (out / "straight" / "demo").string());
  ASSERT_EQ(from.exit_code, 0) << from.output;
  EXPECT_TRUE(contains(from.output,
                       "train starts from " + (out / "straight" / "demo" / "trainable-train.safetensors").string()))
      << from.output;
  const auto other_size =
      run_dsee(adapter_run(out / "init-8") +
               " --set tuning.adapter_size=8 --set tuning.init_from=" + (out / "straight" / "demo").string());
  EXPECT_EQ(other_size.exit_code, 1) << other_size.output;
  EXPECT_TRUE(contains(other_size.output, "that run has tuning.adapter_size = 16, this run")) << other_size.output;

  const auto arms = run_dsee("run " + std::string(DSEE_SOURCE_DIR) +
                             "/recipes/demo.toml --set run.out_dir=" + (out / "arms").string() +
                             " --set task.train_size=128 --set task.dev_size=64 --set train.epochs=1"
                             " --set run.compare_seeds=1 --set 'run.compare=[\"lora: tuning.method=lora\", "
                             "\"adapter-8: tuning.method=adapter tuning.adapter_size=8\"]'");
  ASSERT_EQ(arms.exit_code, 0) << arms.output;
  EXPECT_EQ(summary_of(out / "arms" / "demo")["arms"][1]["summary"]["method"], "adapter");
  EXPECT_TRUE(contains(arms.output, "\nadapter-8 ")) << arms.output;

  const std::string base = "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set 'run.compare=[]'" +
                           " --set tuning.method=adapter --set run.out_dir=" + (out / "refused").string();
  const auto pruned = run_dsee(base + " --set prune.kind=unstructured");
  EXPECT_EQ(pruned.exit_code, 1) << pruned.output;
  EXPECT_TRUE(contains(pruned.output,
                       "which adapter does not have (it trains model tensors in place or adds "
                       "adapters)"))
      << pruned.output;
  const auto peft = run_dsee(base + " --set export.format=peft");
  EXPECT_EQ(peft.exit_code, 1) << peft.output;
  EXPECT_TRUE(contains(peft.output, "export.format = peft needs tuning.method = lora")) << peft.output;
  EXPECT_FALSE(fs::exists(out / "refused" / "demo" / "config.toml"));

  // run.precision = bf16: the adapters, LayerNorms and head train in fp32 on the bf16 model, and it learns.
  const auto bf16 = run_dsee(adapter_run(out / "bf16") + " --set run.precision=bf16");
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  const auto bf16_summary = summary_of(out / "bf16" / "demo");
  EXPECT_GT(bf16_summary["dev"]["accuracy"].get<double>(), untuned + 0.05);
  const auto trainables = SafetensorsCheckpoint::open(out / "bf16" / "demo" / "trainable-train.safetensors");
  EXPECT_EQ(std::int64_t(trainables.names().size()), 4 * 4 + 5 * 2 + 2);
  for (const auto& name : trainables.names()) EXPECT_EQ(trainables.tensor(name).scalar_type(), at::kFloat) << name;
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
