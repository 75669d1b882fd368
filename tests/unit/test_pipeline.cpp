// dsee run: the demo recipe end to end at a reduced size, finished stages
// skipped on a re-run, and a run directory that refuses another recipe.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/io/safetensors.h"
#include "error_of.h"
#include "recipes/compare.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

const std::string kDemo = std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml";

std::string small(const fs::path& out) {
  return " --set run.out_dir=" + out.string() +
         " --set task.train_size=128 --set task.dev_size=64 --set train.epochs=1 --set retune.epochs=1"
         " --set run.compare_seeds=1";
}

TEST(Pipeline, DemoRunsEveryArmAndPrintsTheTable) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* arm : {"full", "lora", "lora-r4", "dsee", "dsee-unstructured-30", "dsee-heads-3"})
    EXPECT_TRUE(contains(r.output, std::string("\n") + arm + " ")) << arm;
  std::ifstream in(out / "demo" / "summary.json");
  const auto summary = nlohmann::json::parse(in);
  ASSERT_EQ(summary["arms"].size(), 6u);
  const auto& arms = summary["arms"];
  const auto trainable = [&](int i) { return arms[i]["summary"]["trainable_parameters"].get<std::int64_t>(); };
  // Full fine-tuning trains everything; LoRA r=2, LoRA r=4 (2 more ranks of 64 + 64 on each of the 4 matrices),
  // and DSEE r=2 + 16 entries per matrix.
  EXPECT_GT(trainable(0), 20 * trainable(1));
  EXPECT_EQ(trainable(2) - trainable(1), 4 * 2 * (64 + 64));
  EXPECT_EQ(trainable(3) - trainable(1), 4 * 16);
  // Every arm learns the same task from the same data (Note [The arms' shared data]): the untuned model's
  // dev accuracy is one number (CompareSeeds... below: also for an arm with another omega.c).
  for (int i = 1; i < 6; ++i)
    EXPECT_EQ(arms[i]["summary"]["stages"]["pretrained"]["dev"], arms[0]["summary"]["stages"]["pretrained"]["dev"])
        << arms[i]["name"];
  // Unstructured pruning removes entries; head pruning removes FLOPs.
  const auto& dsee = arms[3]["summary"];
  EXPECT_LT(arms[4]["summary"]["nonzero_parameters"].get<std::int64_t>(),
            dsee["nonzero_parameters"].get<std::int64_t>());
  EXPECT_LT(arms[5]["summary"]["flops_dense"].get<std::int64_t>(), dsee["flops_dense"].get<std::int64_t>());
  EXPECT_TRUE(fs::exists(out / "demo" / "dsee" / "omega.h5"));
  EXPECT_TRUE(fs::exists(out / "demo" / "dsee-heads-3" / "masks.h5"));

  // A re-run skips every finished stage and reports the same numbers.
  const auto again = run_dsee("run " + kDemo + small(out));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "stage train finished before, skipped"));
  std::ifstream in2(out / "demo" / "summary.json");
  const auto summary2 = nlohmann::json::parse(in2);
  EXPECT_EQ(summary2["arms"][2]["summary"]["dev"], summary["arms"][2]["summary"]["dev"]);

  // An arm may not change the task its comparison shares; refused before anything is written.
  const fs::path refused = fs::temp_directory_path() / ("dsee-pipeline-arm-task-" + std::to_string(getpid()));
  const auto task_arm = run_dsee("run " + kDemo + " --set run.out_dir=" + refused.string() +
                                 " --set 'run.compare=[\"a: tuning.method=lora\", \"b: task.train_size=64\"]'");
  EXPECT_EQ(task_arm.exit_code, 1) << task_arm.output;
  EXPECT_TRUE(contains(task_arm.output,
                       "run.compare arm 'b' sets task.train_size=64: the arms of a comparison share "
                       "the task and its data"))
      << task_arm.output;
  EXPECT_FALSE(fs::exists(refused / "demo"));

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
  EXPECT_TRUE(
      contains(r.output,
               "export.format = peft needs tuning.method = lora with prune.kind = none, or tuning.method = prefix "
               "(got dsee with prune.kind = none)"))
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

nlohmann::json json_file(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// The __metadata__ of a safetensors file (8-byte little-endian header length, then the JSON header).
nlohmann::json safetensors_metadata(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), sizeof length);
  std::string header(length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  return nlohmann::json::parse(header).value("__metadata__", nlohmann::json::object());
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  std::ifstream x(a, std::ios::binary), y(b, std::ios::binary);
  const std::string p((std::istreambuf_iterator<char>(x)), {}), q((std::istreambuf_iterator<char>(y)), {});
  return x.good() || x.eof() ? !p.empty() && p == q : false;
}

bool same_tensors(const fs::path& a, const fs::path& b) {
  const auto x = SafetensorsCheckpoint::open(a), y = SafetensorsCheckpoint::open(b);
  if (x.names() != y.names()) return false;
  for (const auto& name : x.names())
    if (!at::equal(x.tensor(name), y.tensor(name))) return false;
  return true;
}

// Note [The best evaluation] in stage_train.cpp: the best evaluation's tensors
// are written next to the last step's, and train.load_best_at_end ends the
// stage with them. The best is found independently here, from the eval
// records of metrics.jsonl (the first of the highest accuracies).
TEST(Pipeline, KeepsTheBestEvaluationAndCanEndWithIt) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-best-" + std::to_string(getpid()));
  const std::string arm = "run " + kDemo + small(out) +
                          " --set run.compare=[] --set tuning.method=lora --set tuning.rank=4 --set train.epochs=2"
                          " --set train.lr=3e-3 --set train.eval_every=1 --set prune.kind=none";
  std::map<bool, fs::path> dirs;
  for (const bool load : {false, true}) {
    const auto r = run_dsee(arm + " --set run.name=" + (load ? "best" : "last") +
                            " --set train.load_best_at_end=" + (load ? "true" : "false"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Both end with tensors an evaluation saw: the last one's, or the best one's.
    EXPECT_NE(r.output.find(std::string("train ends with the tensors of its ") + (load ? "best" : "last") +
                            " evaluation; its dev metrics are the stage's"),
              std::string::npos)
        << r.output;
    dirs[load] = out / (load ? "best" : "last");
  }
  // The best eval record of metrics.jsonl (one run; the other trains the same steps).
  std::int64_t best_step = -1, last_step = -1;
  double best_value = -1;
  std::ifstream metrics(dirs[false] / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record["kind"] != "eval") continue;
    last_step = record["step"].get<std::int64_t>();
    if (record["accuracy"].get<double>() > best_value) {
      best_value = record["accuracy"].get<double>();
      best_step = last_step;
    }
  }
  ASSERT_GT(best_step, 0);
  // These settings make the best evaluation an earlier one, so the two runs must end differently.
  ASSERT_LT(best_step, last_step) << "pick settings whose best evaluation is not the last";
  for (const bool load : {false, true}) {
    const auto& dir = dirs[load];
    const auto train = json_file(dir / "stages" / "train.json");
    ASSERT_TRUE(train.contains("best")) << train.dump();
    EXPECT_EQ(train["best"]["step"], best_step);
    EXPECT_EQ(train["best"]["metric"], "accuracy");
    EXPECT_EQ(train["best"]["value"].get<double>(), best_value);
    EXPECT_EQ(train["best"]["loaded"], load);
    EXPECT_EQ(safetensors_metadata(dir / "trainable-train-best.safetensors")["step"], std::to_string(best_step));
    const bool ends_best = same_tensors(dir / "trainable-train.safetensors", dir / "trainable-train-best.safetensors");
    EXPECT_EQ(ends_best, load);
    if (load) {
      EXPECT_EQ(train["dev"]["accuracy"].get<double>(), best_value);  // the best evaluation, evaluated again
    }
    // Note [The stage's closing evaluation]: the record's metrics, reused from
    // the trainer's evaluation of the same tensors, equal the eval stage's
    // fresh evaluation of them (no pruning in between).
    EXPECT_EQ(json_file(dir / "summary.json")["dev"], train["dev"]) << load;
  }
  EXPECT_TRUE(
      same_tensors(dirs[false] / "trainable-train-best.safetensors", dirs[true] / "trainable-train-best.safetensors"));
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

// Every training key reaches the trainer's options (recipe_trainer_options,
// what stage_train uses); retune takes retune.epochs and retune.lr, else train.lr.
TEST(Pipeline, TrainingKeysReachTheTrainerOptions) {
  const auto recipe = recipe_from_config(Config::defaults(
      recipe_schema(),
      {"train.epochs=7", "train.max_steps=11", "train.lr=3e-4", "train.grad_accumulation=4", "train.weight_decay=0.01",
       "train.decay_exclude_bias_norm=false", "train.adam_beta1=0.8", "train.adam_beta2=0.98",
       "train.adam_epsilon=1e-6", "train.schedule=cosine", "train.warmup_steps=5", "train.max_grad_norm=0.5",
       "train.skip_nonfinite=true", "train.eval_every=9", "train.early_stopping_patience=2",
       "train.metric_for_best=loss", "train.greater_is_better=false", "retune.epochs=2"}));
  const auto train = recipe_trainer_options(recipe, Stage::train);
  EXPECT_EQ(train.epochs, 7);
  EXPECT_EQ(train.max_steps, 11);
  EXPECT_EQ(train.lr, 3e-4);
  EXPECT_EQ(train.grad_accumulation, 4);
  EXPECT_EQ(train.adamw.weight_decay, 0.01);
  EXPECT_FALSE(train.adamw.exclude_bias_and_norm);
  EXPECT_EQ(train.adamw.beta1, 0.8);
  EXPECT_EQ(train.adamw.beta2, 0.98);
  EXPECT_EQ(train.adamw.eps, 1e-6);
  EXPECT_EQ(train.schedule.kind, LrScheduleKind::cosine);
  EXPECT_EQ(train.schedule.warmup_steps, 5);
  EXPECT_EQ(train.schedule.warmup_ratio, 0.0);
  EXPECT_EQ(train.max_grad_norm, 0.5);
  EXPECT_TRUE(train.skip_nonfinite);
  EXPECT_EQ(train.eval_every, 9);
  EXPECT_EQ(train.early_stopping_patience, 2);
  EXPECT_EQ(train.metric_for_best, "loss");
  EXPECT_FALSE(train.greater_is_better);
  const auto retune = recipe_trainer_options(recipe, Stage::retune);
  EXPECT_EQ(retune.epochs, 2);
  EXPECT_EQ(retune.max_steps, 0);
  EXPECT_EQ(retune.lr, 3e-4);  // retune.lr = 0: train.lr
  EXPECT_EQ(
      recipe_trainer_options(recipe_from_config(Config::defaults(recipe_schema(), {"retune.lr=1e-5"})), Stage::retune)
          .lr,
      1e-5);
  // The defaults are the Python stack's (torch.optim.AdamW, transformers' Trainer).
  const auto defaults = recipe_trainer_options(recipe_from_config(Config::defaults(recipe_schema())), Stage::train);
  EXPECT_EQ(defaults.adamw.beta1, 0.9);
  EXPECT_EQ(defaults.adamw.beta2, 0.999);
  EXPECT_EQ(defaults.adamw.eps, 1e-8);
  EXPECT_TRUE(defaults.adamw.exclude_bias_and_norm);
  EXPECT_TRUE(contains(
      error_of([] {
        recipe_trainer_options(
            recipe_from_config(Config::defaults(recipe_schema(), {"train.warmup_steps=3", "train.warmup_ratio=0.1"})),
            Stage::train);
      }),
      "train.warmup_ratio (0.1) and train.warmup_steps (3) are both set"));
}

// End to end: a warm-up of 2 steps given as steps or as a ratio of the 8
// steps trains the same tensors, bit for bit; 3 steps trains others.
TEST(Pipeline, WarmupStepsEqualTheSameWarmupAsARatio) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-warmup-" + std::to_string(getpid()));
  const std::string arm = "run " + kDemo + small(out) +
                          " --set run.compare=[] --set tuning.method=lora --set tuning.rank=4 --set train.epochs=2"
                          " --set train.lr=3e-3 --set prune.kind=none";
  std::map<std::string, fs::path> dirs;
  for (const auto& [name, warmup] : std::vector<std::pair<std::string, std::string>>{
           {"ratio", "train.warmup_ratio=0.25"},
           {"steps2", "train.warmup_ratio=0 --set train.warmup_steps=2"},
           {"steps3", "train.warmup_ratio=0 --set train.warmup_steps=3"}}) {
    const auto r = run_dsee(arm + " --set run.name=" + name + " --set " + warmup);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    dirs[name] = out / name;
    EXPECT_EQ(json_file(dirs[name] / "stages" / "train.json")["steps"], 8);
  }
  EXPECT_TRUE(
      same_tensors(dirs["ratio"] / "trainable-train.safetensors", dirs["steps2"] / "trainable-train.safetensors"));
  EXPECT_FALSE(
      same_tensors(dirs["ratio"] / "trainable-train.safetensors", dirs["steps3"] / "trainable-train.safetensors"));
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

// Note [Choosing stages]: a run driven stage by stage through run.stages
// ends with the same files as a straight run, bit for bit (CPU).
TEST(Pipeline, RunStagesGoStageByStageToTheStraightResult) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-stages-" + std::to_string(getpid()));
  const std::string arm = "run " + kDemo + small(out) +
                          " --set run.compare=[] --set tuning.method=dsee --set tuning.rank=4 --set omega.c=8"
                          " --set prune.kind=unstructured --set export.format=hf";
  const auto straight = run_dsee(arm + " --set run.name=straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // Every stage records its wall time (bench/pipeline.py reads them); together they fit in the run's.
  const auto timed = json_file(out / "straight" / "summary.json");
  double stage_seconds = 0;
  for (const char* stage : {"omega", "pretrained", "train", "prune", "retune", "eval"}) {
    ASSERT_TRUE(timed["stages"][stage].contains("seconds")) << stage;
    EXPECT_GE(timed["stages"][stage]["seconds"].get<double>(), 0.0) << stage;
    stage_seconds += timed["stages"][stage]["seconds"].get<double>();
  }
  EXPECT_GT(timed["stages"]["train"]["seconds"].get<double>(), 0.0);
  EXPECT_LE(stage_seconds, timed["seconds"].get<double>());
  const fs::path dir = out / "staged";
  const auto step = [&](const std::string& stages) { return run_dsee(arm + " --set run.name=staged --set " + stages); };

  auto r = step("'run.stages=[\"omega\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "run.stages ends with omega")) << r.output;
  EXPECT_TRUE(fs::exists(dir / "omega.h5"));
  EXPECT_TRUE(fs::exists(dir / "stages" / "omega.json"));
  EXPECT_FALSE(fs::exists(dir / "stages" / "train.json"));
  EXPECT_FALSE(fs::exists(dir / "summary.json"));

  // prune needs train, which has not run and is not listed
  r = step("'run.stages=[\"prune\"]'");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "leaves out stage train, which a listed stage needs and which has not run"))
      << r.output;

  r = step("'run.stages=[\"train\", \"prune\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "stage omega finished before, skipped")) << r.output;
  EXPECT_TRUE(fs::exists(dir / "stages" / "prune.json"));
  EXPECT_FALSE(fs::exists(dir / "stages" / "retune.json"));
  EXPECT_FALSE(fs::exists(dir / "summary.json"));

  r = step("run.stages=[]");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The trained tensors, the predictions and the export (which bakes in Ω and the masks) match byte for
  // byte; the HDF5 files hold object times, so they are compared by their effect.
  for (const char* file : {"trainable-train.safetensors", "trainable-retune.safetensors", "predictions-dev.safetensors",
                           "export/model.safetensors"})
    EXPECT_TRUE(same_bytes(out / "straight" / file, dir / file)) << file;
  EXPECT_EQ(json_file(out / "straight" / "summary.json")["dev"], json_file(dir / "summary.json")["dev"]);

  // Once finished, export is skipped like the other stages (eval re-runs: it only reads).
  const auto exported_at = fs::last_write_time(dir / "export" / "model.safetensors");
  r = step("run.stages=[]");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "stage export finished before, skipped")) << r.output;
  EXPECT_EQ(fs::last_write_time(dir / "export" / "model.safetensors"), exported_at);
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

// Arms of run.compare skip a listed stage they do not configure but stop
// at its place: with ["omega"] the dsee arms compute Ω, no arm trains.
TEST(Pipeline, RunStagesStopEveryArmAtTheSamePlace) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-stages-arms-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out) + " --set 'run.stages=[\"omega\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "the comparison table is printed when they finish")) << r.output;
  for (const char* arm : {"full", "lora", "dsee", "dsee-unstructured-30", "dsee-heads-3"}) {
    const bool dsee = std::string(arm).starts_with("dsee");
    EXPECT_EQ(fs::exists(out / "demo" / arm / "omega.h5"), dsee) << arm;
    EXPECT_FALSE(fs::exists(out / "demo" / arm / "stages" / "train.json")) << arm;
  }
  EXPECT_EQ(json_file(out / "demo" / "summary.json")["arms"][0]["summary"]["stopped_after"], "omega");
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

TEST(Pipeline, RunStagesAreCheckedBeforeAnything) {
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-stages-bad-" + std::to_string(getpid()));
  const std::string arm = "run " + kDemo + small(out) + " --set run.compare=[]";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"'run.stages=[\"trian\"]'", "run.stages: 'trian' is not a stage; the stages are omega, train, prune"},
      {"'run.stages=[\"eval\", \"train\"]'", "run.stages: 'train' comes after 'eval'"},
      {"'run.stages=[\"omega\"]' --set tuning.method=lora", "run.stages lists omega, but tuning.method = lora"},
      {"'run.stages=[\"prune\"]' --set prune.kind=none", "run.stages lists prune, but prune.kind = none"},
      {"'run.stages=[\"export\"]' --set export.format=none", "run.stages lists export, but export.format = none"}};
  for (const auto& [stages, message] : cases) {
    const auto r = run_dsee(arm + " --set " + stages);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, message)) << stages << "\n" << r.output;
  }
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

TEST(Pipeline, CompareSeedsRunEveryArmPerSeedAndTabulateMeanAndSpread) {
  // Expansion: arm by arm, seed by seed from run.seed, folders <arm>-seed<k>.
  const Recipe recipe = recipe_load(
      kDemo, {"run.seed=7", "run.compare_seeds=2", "run.compare=[\"a: tuning.rank=2\", \"b: tuning.rank=3\"]"});
  const auto arms = compare_arms(recipe, "data");
  ASSERT_EQ(arms.size(), 4u);
  EXPECT_EQ(arms[1].name, "a-seed8");
  EXPECT_EQ(arms[1].arm, "a");
  EXPECT_EQ(arms[1].overrides, (std::vector<std::string>{"tuning.rank=2", "run.compare=[]", "run.seed=8"}));
  EXPECT_EQ(arms[2].name, "b-seed7");
  const Recipe seeded = recipe_load(kDemo, {"run.compare_seeds=2", "run.compare=[\"a: run.seed=3\"]"});
  EXPECT_TRUE(contains(error_of([&] { compare_arms(seeded, "data"); }), "sets run.seed=3 while run.compare_seeds = 2"));

  // A run: each arm's table row is mean ± std (n) of its seeds' summaries.
  const fs::path out = fs::temp_directory_path() / ("dsee-pipeline-seeds-" + std::to_string(getpid()));
  const auto r = run_dsee("run " + kDemo + small(out) +
                          " --set run.compare_seeds=2 --set 'run.compare=[\"lora: tuning.method=lora tuning.rank=4\", "
                          "\"dsee: tuning.method=dsee tuning.rank=4 omega.c=32\"]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(out / "demo" / "summary.json");
  const auto summary = nlohmann::json::parse(in);
  ASSERT_EQ(summary["arms"].size(), 4u);
  std::vector<double> trained;
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(summary["arms"][i]["arm"], "lora");
    EXPECT_TRUE(fs::exists(out / "demo" / summary["arms"][i]["name"].get<std::string>() / "summary.json"));
    trained.push_back(summary["arms"][i]["summary"]["stages"]["train"]["dev"]["accuracy"].get<double>());
  }
  EXPECT_EQ(summary["arms"][3]["name"], "dsee-seed43");
  // One task for every arm and seed, also for the arm with its own omega.c (Note [The arms' shared data]).
  for (int i = 1; i < 4; ++i)
    EXPECT_EQ(summary["arms"][i]["summary"]["stages"]["pretrained"]["dev"],
              summary["arms"][0]["summary"]["stages"]["pretrained"]["dev"]);
  const std::string cell = fmt::format("{:.3f} ± {:.3f} (2)", (trained[0] + trained[1]) / 2,
                                       std::abs(trained[0] - trained[1]) / std::sqrt(2.0));
  EXPECT_TRUE(contains(r.output, "\nlora ")) << r.output;
  EXPECT_TRUE(contains(r.output, cell)) << cell << "\n" << r.output;
  EXPECT_TRUE(contains(r.output, "mean ± sample std (number of seeds)")) << r.output;
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
