// The in-place baselines bitfit and top_k (core/tuning/tuning.h,
// tuning_trains_tensor): which tensors train on tiny BERT and GPT-2 models
// (BERT-base's counts by hand: test_counting.cpp), and `dsee run` of
// each on the shrunken demo: it learns (dev accuracy above the untuned
// model's), resumes from a checkpoint to the straight run's tensors, runs as
// run.compare arms, and refuses pruning before anything is written.
// tests/parity/test_baselines.py checks the trainable sets and gradients
// against transformers, and the hf export's logits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

#include "core/tuning/counting.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::run_dsee;

std::set<std::string> trainable_names(ModelTuning& tuning) {
  std::set<std::string> names;
  for (const auto& [name, tensor] : tuning.trainable_parameters()) names.insert(name);
  return names;
}

// The slots `keep` selects, and a check that exactly they require grad.
std::set<std::string> expected_and_flags(PretrainedModel& model, const std::function<bool(const std::string&)>& keep) {
  std::set<std::string> names;
  for (const auto& slot : model.tensor_slots()) {
    EXPECT_EQ(slot.tensor->requires_grad(), keep(slot.name)) << slot.name;
    if (keep(slot.name)) names.insert(slot.name);
  }
  return names;
}

TEST(Baselines, BitfitTrainsEveryBiasAndTheHead) {
  auto bert = tiny_model(bert_json(), 1);
  TuningOptions options;
  options.method = TuningMethod::bitfit;
  auto tuning = tuning_attach(*bert, options);
  const auto bert_expected = expected_and_flags(
      *bert, [](const std::string& name) { return name.ends_with(".bias") || name.starts_with("classifier."); });
  EXPECT_EQ(trainable_names(*tuning), bert_expected);
  EXPECT_TRUE(bert_expected.contains("pooler.dense.bias"));
  EXPECT_TRUE(bert_expected.contains("embeddings.LayerNorm.bias"));
  EXPECT_TRUE(bert_expected.contains("classifier.weight"));
  EXPECT_TRUE(tuning->updates().empty());
  EXPECT_EQ(trainable_parameter_count(*tuning), trainable_parameter_count(*bert, options, 0));

  auto gpt2 = tiny_model(gpt2_json(), 2);
  tuning = tuning_attach(*gpt2, options);
  const auto gpt2_expected = expected_and_flags(*gpt2, [](const std::string& name) { return name.ends_with(".bias"); });
  EXPECT_EQ(trainable_names(*tuning), gpt2_expected);
  EXPECT_EQ(gpt2_expected.size(), 3u * 6u + 1u);  // ln_1, c_attn, c_proj, ln_2, c_fc, mlp.c_proj per block; ln_f
  EXPECT_EQ(trainable_parameter_count(*tuning), trainable_parameter_count(*gpt2, options, 0));
}

TEST(Baselines, TopKTrainsTheTopLayersAndTheHead) {
  auto bert = tiny_model(bert_json(), 1);  // 2 layers
  TuningOptions options;
  options.method = TuningMethod::top_k;
  options.top_layers = 1;
  auto tuning = tuning_attach(*bert, options);
  EXPECT_EQ(trainable_names(*tuning), expected_and_flags(*bert, [](const std::string& name) {
              return name.starts_with("encoder.layer.1.") || name.starts_with("classifier.");
            }));
  EXPECT_EQ(trainable_parameter_count(*tuning), trainable_parameter_count(*bert, options, 0));

  auto gpt2 = tiny_model(gpt2_json(), 2);  // 3 blocks
  options.top_layers = 2;
  tuning = tuning_attach(*gpt2, options);
  EXPECT_EQ(trainable_names(*tuning), expected_and_flags(*gpt2, [](const std::string& name) {
              return name.starts_with("h.1.") || name.starts_with("h.2.") || name.starts_with("ln_f.");
            }));
  EXPECT_EQ(trainable_parameter_count(*tuning), trainable_parameter_count(*gpt2, options, 0));

  for (const std::int64_t k : {0, 4}) {
    auto model = tiny_model(gpt2_json(), 2);
    options.top_layers = k;
    EXPECT_TRUE(contains(error_of([&] { tuning_attach(*model, options); }),
                         "tuning.top_layers = " + std::to_string(k) +
                             ": top_k trains the top k of the model's 3 layers, so k must be in [1, 3]"));
  }
}

nlohmann::json summary_of(const fs::path& dir) { return nlohmann::json::parse(file_text(dir / "summary.json")); }

// 512 training sequences, 16 steps an epoch, 4 epochs: a few seconds.
std::string baseline_run(const fs::path& out, const std::string& method, const std::string& lr) {
  return "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
         " --set 'run.compare=[]' --set tuning.method=" + method + " --set train.lr=" + lr +
         " --set task.train_size=512 --set task.dev_size=128 --set train.epochs=4";
}

// Each learns above the untuned model's dev accuracy (0.66 here; measured
// 0.77 for bitfit, 0.84 for top_k, and at least 0.75 / 0.83 for run.seed 1
// and 2); a run stopped by SIGTERM and resumed ends with the straight run's
// tensors byte for byte; tuning.init_from takes a run of the same method.
TEST(Baselines, DemoRunsLearnAndResume) {
  const fs::path out = fs::temp_directory_path() / ("dsee-baselines-" + std::to_string(getpid()));
  struct Case {
    std::string method, lr;
    std::int64_t trainable;  // the demo model's (hidden 64, 2 layers, 2 labels); top_k: k = 2
    std::string counted;     // as `dsee count` prints it
  };
  for (const auto& [method, lr, trainable, counted] :
       std::vector<Case>{{"bitfit", "1e-2", 1410, "1,410"}, {"top_k", "3e-3", 67074, "67,074"}}) {
    const auto straight = run_dsee(baseline_run(out / method, method, lr));
    ASSERT_EQ(straight.exit_code, 0) << straight.output;
    const auto summary = summary_of(out / method / "demo");
    const double untuned = summary["stages"]["pretrained"]["dev"]["accuracy"].get<double>();
    const double tuned = summary["dev"]["accuracy"].get<double>();
    EXPECT_GT(tuned, untuned + 0.05) << method;
    EXPECT_EQ(summary["method"], method);
    // Only the trainable tensors are all-reduced (fp32), and `dsee count` counts them the same way.
    EXPECT_EQ(summary["trainable_parameters"].get<std::int64_t>(), trainable) << method;
    EXPECT_EQ(summary["stages"]["train"]["allreduce_bytes_per_step"].get<std::int64_t>(), 4 * trainable) << method;
    const auto count =
        run_dsee("count --model " + (out / method / "demo" / "data" / "pretrained").string() + " --method " + method);
    ASSERT_EQ(count.exit_code, 0) << count.output;
    EXPECT_TRUE(contains(count.output, "trainable            " + counted + " (")) << count.output;

    const auto stopped_dir = out / (method + "-stopped");
    const auto stopped = run_dsee(baseline_run(stopped_dir, method, lr), "DSEE_TEST_STOP_AFTER_STEP=20 ");
    ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
    const auto resumed = run_dsee(baseline_run(stopped_dir, method, lr));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_TRUE(contains(resumed.output, "resuming train from ckpt/step-20.h5 (step 20 of 64)")) << resumed.output;
    EXPECT_EQ(file_text(out / method / "demo" / "trainable-train.safetensors"),
              file_text(stopped_dir / "demo" / "trainable-train.safetensors"))
        << method;
    EXPECT_EQ(summary_of(stopped_dir / "demo")["dev"], summary["dev"]) << method;
  }
  // tuning.init_from: bitfit starts from a bitfit run; top_k needs the source's tuning.top_layers.
  const auto from_bitfit =
      run_dsee(baseline_run(out / "bitfit-init", "bitfit", "1e-2") +
               " --set train.epochs=1 --set tuning.init_from=" + (out / "bitfit" / "demo").string());
  ASSERT_EQ(from_bitfit.exit_code, 0) << from_bitfit.output;
  EXPECT_TRUE(contains(from_bitfit.output,
                       "train starts from " + (out / "bitfit" / "demo" / "trainable-train.safetensors").string()))
      << from_bitfit.output;
  const auto from_top2 =
      run_dsee(baseline_run(out / "top1-init", "top_k", "3e-3") +
               " --set tuning.top_layers=1 --set tuning.init_from=" + (out / "top_k" / "demo").string());
  EXPECT_EQ(from_top2.exit_code, 1) << from_top2.output;
  EXPECT_TRUE(contains(from_top2.output, "that run has tuning.top_layers = 2, this run")) << from_top2.output;
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(Baselines, CompareArmsAndPruningRefused) {
  const fs::path out = fs::temp_directory_path() / ("dsee-baselines-arms-" + std::to_string(getpid()));
  const std::string demo =
      "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
      " --set task.train_size=128 --set task.dev_size=64 --set train.epochs=1 --set run.compare_seeds=1";
  const auto r = run_dsee(demo +
                          " --set 'run.compare=[\"lora: tuning.method=lora\", \"bitfit: tuning.method=bitfit\", "
                          "\"top-1: tuning.method=top_k tuning.top_layers=1\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto arms = summary_of(out / "demo")["arms"];
  ASSERT_EQ(arms.size(), 3u);
  EXPECT_EQ(arms[1]["summary"]["method"], "bitfit");
  EXPECT_EQ(arms[2]["summary"]["method"], "top_k");
  for (const char* arm : {"bitfit", "top-1"}) EXPECT_TRUE(contains(r.output, std::string("\n") + arm + " ")) << arm;
  EXPECT_FALSE(fs::exists(out / "demo" / "bitfit" / "omega.h5"));

  const fs::path refused = out / "refused";
  const auto pruned =
      run_dsee("run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + refused.string() +
               " --set 'run.compare=[]' --set tuning.method=bitfit --set prune.kind=unstructured");
  EXPECT_EQ(pruned.exit_code, 1) << pruned.output;
  EXPECT_TRUE(contains(pruned.output,
                       "prune.kind = unstructured with tuning.method = bitfit: pruning scores the update ΔW of the "
                       "adapted matrices (and re-tunes it), which bitfit does not have"))
      << pruned.output;
  EXPECT_FALSE(fs::exists(refused / "demo" / "config.toml"));
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
