// dsee run: the demo recipe end to end at a reduced size, finished stages
// skipped on a re-run, and a run directory that refuses another recipe.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>

#include "error_of.h"
#include "recipes/pipeline.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

const std::string kDemo = std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml";

std::string small(const fs::path& out) {
  return " --set run.out_dir=" + out.string() +
         " --set task.train_size=128 --set task.dev_size=64 --set train.epochs=1 --set retune.epochs=1";
}

TEST(Pipeline, DemoRunsEveryArmAndPrintsTheTable) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* arm : {"full", "lora", "dsee", "dsee-unstructured-30", "dsee-heads-3"})
    EXPECT_TRUE(contains(r.output, std::string("\n") + arm + " ")) << arm;
  std::ifstream in(out / "demo" / "summary.json");
  const auto summary = nlohmann::json::parse(in);
  ASSERT_EQ(summary["arms"].size(), 5u);
  const auto& arms = summary["arms"];
  const auto trainable = [&](int i) { return arms[i]["summary"]["trainable_parameters"].get<std::int64_t>(); };
  // Full fine-tuning trains everything; LoRA r=8 vs DSEE r=8 + 16 entries per matrix.
  EXPECT_GT(trainable(0), 20 * trainable(1));
  EXPECT_EQ(trainable(2) - trainable(1), 2 * 2 * 16);
  // Unstructured pruning removes entries; head pruning removes FLOPs.
  const auto& dsee = arms[2]["summary"];
  EXPECT_LT(arms[3]["summary"]["nonzero_parameters"].get<std::int64_t>(),
            dsee["nonzero_parameters"].get<std::int64_t>());
  EXPECT_LT(arms[4]["summary"]["flops_dense"].get<std::int64_t>(), dsee["flops_dense"].get<std::int64_t>());
  EXPECT_TRUE(fs::exists(out / "demo" / "dsee" / "omega.h5"));
  EXPECT_TRUE(fs::exists(out / "demo" / "dsee-heads-3" / "masks.h5"));

  // A re-run skips every finished stage and reports the same numbers.
  const auto again = run_dsee("run " + kDemo + small(out));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "stage train finished before, skipped"));
  std::ifstream in2(out / "demo" / "summary.json");
  const auto summary2 = nlohmann::json::parse(in2);
  EXPECT_EQ(summary2["arms"][2]["summary"]["dev"], summary["arms"][2]["summary"]["dev"]);

  // Another recipe in the same run directory is refused, naming the key.
  const auto other = run_dsee("run " + kDemo + small(out) + " --set train.lr=0.5");
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_TRUE(contains(other.output, "train.lr: 0.01 in the run, 0.5 now")) << other.output;
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(Pipeline, MetricForBestMustBeAnEvaluationMetric) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-metric-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out) +
                          " --set run.compare=[] --set tuning.method=lora --set train.metric_for_best=f1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "train.metric_for_best = 'f1' is not among the evaluation's metrics (accuracy)"))
      << r.output;
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(Pipeline, PeftExportOfADseeRecipeIsRefusedBeforeAnyStage) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-peft-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out) + " --set run.compare=[] --set export.format=peft");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "export.format = peft needs tuning.method = lora and prune.kind = none (got dsee"))
      << r.output;
  EXPECT_FALSE(fs::exists(out / "demo" / "config.toml"));  // nothing claimed: the fixed recipe may use the directory
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

// dsee run trains on the CPU in this version: run.device = cuda must say so
// instead of silently training on the CPU.
// Where no GPU is usable, run.device = cuda is an error before anything is
// written (on a GPU machine the pipeline trains there: gpu_run_cuda).
TEST(Pipeline, CudaWithoutGpuIsRefusedBeforeAnyStage) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is usable here; tests/gpu/test_run_cuda.py covers it";
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-cuda-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out) + " --set run.compare=[] --set run.device=cuda");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "run.device = cuda, but no CUDA device is usable here")) << r.output;
  EXPECT_TRUE(contains(r.output, "set run.device to cpu or auto")) << r.output;
  EXPECT_FALSE(fs::exists(out / "demo" / "config.toml"));
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(Pipeline, CompareArmSyntax) {
  const auto arm = compare_arm_parse("lora: tuning.method=lora  tuning.rank=4");
  EXPECT_EQ(arm.name, "lora");
  EXPECT_EQ(arm.overrides, (std::vector<std::string>{"tuning.method=lora", "tuning.rank=4"}));
  EXPECT_TRUE(contains(error_of([] { compare_arm_parse("no colon"); }), "name: key=value"));
  EXPECT_TRUE(contains(error_of([] { compare_arm_parse("a: rank"); }), "'rank' is not key=value"));
}

}  // namespace
}  // namespace dsee
