// omega.method = gradient (recipes/omega_gradient.h): the recipe's refusals,
// omega.h5's record of the settings, a changed setting refused by the run
// directory, and the warm-up leaving no trace in the run that follows (the
// parity test tests/parity/test_omega_gradient.py checks Ω itself against
// transformers).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "error_of.h"
#include "recipes/recipe.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

const std::string kDemo = std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml";

nlohmann::json json_of(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(OmegaGradient, RecipeRefusesItOutsideDseeAndTooFewSteps) {
  const auto load = [](std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(), "run.compare=[]");
    return error_of([&] { recipe_load(kDemo, overrides); });
  };
  EXPECT_EQ(load({"omega.method=gradient"}), "<no error>");
  const auto lora = load({"omega.method=gradient", "tuning.method=lora"});
  EXPECT_TRUE(contains(lora, "omega.method = gradient")) << lora;
  EXPECT_TRUE(contains(lora, "tuning.method is lora")) << lora;
  const auto steps = load({"omega.method=gradient", "omega.gradient_steps=0"});
  EXPECT_TRUE(contains(steps, "omega.gradient_steps")) << steps;
  const auto warmup = load({"omega.method=gradient", "omega.gradient_warmup_steps=-1"});
  EXPECT_TRUE(contains(warmup, "omega.gradient_warmup_steps")) << warmup;
  // Ω from the weights alone (dsee omega, omega_select) cannot compute it.
  OmegaOptions options;
  options.method = omega_method_from_name("gradient");
  const auto select = error_of([&] { omega_select({{"w", at::ones({2, 2})}}, options); });
  EXPECT_TRUE(contains(select, "needs the task's training data")) << select;
}

TEST(OmegaGradient, SettingsAreRecordedAndTheWarmupLeavesNoTrace) {
  const fs::path out = fs::temp_directory_path() / ("dsee-omega-gradient-" + std::to_string(getpid()));
  const std::string run = "run " + kDemo + " --set run.out_dir=" + out.string() +
                          " --set 'run.compare=[]' --set tuning.method=dsee --set tuning.rank=4 --set omega.c=8"
                          " --set task.train_size=64 --set task.dev_size=32 --set train.epochs=1"
                          " --set train.batch_size=16 --set train.grad_accumulation=2 --set tuning.dropout=0.1"
                          " --set prune.kind=none --set omega.method=gradient --set omega.gradient_steps=2"
                          " --set omega.gradient_warmup_steps=3";
  // Straight through, and omega in one process, the rest in another: the
  // warm-up's adapters and head are gone before training, so both agree.
  const auto straight = run_dsee(run + " --set run.name=straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const auto omega_only = run_dsee(run + " --set run.name=staged --set 'run.stages=[\"omega\"]'");
  ASSERT_EQ(omega_only.exit_code, 0) << omega_only.output;
  EXPECT_FALSE(fs::exists(out / "staged" / "stages" / "train.json"));
  const auto rest = run_dsee(run + " --set run.name=staged");
  ASSERT_EQ(rest.exit_code, 0) << rest.output;

  OmegaFileInfo info;
  const auto a = omega_read(out / "straight" / "omega.h5", &info);
  EXPECT_EQ(info.method, "gradient");
  EXPECT_EQ(info.variant, "gradient_steps=2,gradient_warmup_steps=3");
  const auto b = omega_read(out / "staged" / "omega.h5");
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].indices, b[i].indices)) << a[i].name;
  const auto s = json_of(out / "straight" / "summary.json"), t = json_of(out / "staged" / "summary.json");
  EXPECT_EQ(s["stages"]["pretrained"]["dev"], t["stages"]["pretrained"]["dev"]);
  EXPECT_EQ(s["stages"]["train"]["dev"], t["stages"]["train"]["dev"]);
  EXPECT_EQ(dsee_test::file_text(out / "straight" / "trainable-train.safetensors"),
            dsee_test::file_text(out / "staged" / "trainable-train.safetensors"));

  // A changed setting is another recipe: the run directory refuses it.
  const auto changed = run_dsee(run + " --set run.name=straight --set omega.gradient_steps=3");
  EXPECT_EQ(changed.exit_code, 1) << changed.output;
  EXPECT_TRUE(contains(changed.output, "omega.gradient_steps")) << changed.output;
  // In a directory of its own it computes another Ω, recorded as such.
  const auto other = run_dsee(run +
                              " --set run.name=other --set omega.gradient_warmup_steps=0"
                              " --set 'run.stages=[\"omega\"]'");
  ASSERT_EQ(other.exit_code, 0) << other.output;
  OmegaFileInfo other_info;
  const auto c = omega_read(out / "other" / "omega.h5", &other_info);
  EXPECT_EQ(other_info.variant, "gradient_steps=2,gradient_warmup_steps=0");
  bool differs = false;
  for (std::size_t i = 0; i < a.size(); ++i) differs = differs || !at::equal(a[i].indices, c[i].indices);
  EXPECT_TRUE(differs) << "Ω without the warm-up equals Ω after it";
  std::system(("rm -rf '" + out.string() + "'").c_str());
}

}  // namespace
}  // namespace dsee
