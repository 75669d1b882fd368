// tuning.init_from (recipes/init_from.h): a run's update starting from another
// finished run's tensors. On the one-arm demo: with train.lr = 0 the trained
// tensors are the ones training started from, and they equal the source's
// (Ω copied too); a resumed run does not go back to the source; keys that
// make the tensors differ are refused naming both runs and the key. On a tiny
// BERT: a task head of another shape is skipped, an update tensor of another
// shape is an error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/io/safetensors.h"
#include "core/sparsity/omega_file.h"
#include "error_of.h"
#include "recipes/init_from.h"
#include "run_dsee.h"
#include "tiny_models.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

// The one-arm demo at test size: DSEE r = 4, 2 steps of 32, no pruning.
std::string demo_run(const fs::path& out, const std::string& extra = "") {
  return "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
         " --set 'run.compare=[]' --set tuning.method=dsee --set tuning.rank=4 --set task.train_size=64"
         " --set task.dev_size=32 --set train.epochs=1" +
         extra;
}

// Every tensor of `a` is in `b`, equal.
void expect_same_tensors(const fs::path& a, const fs::path& b) {
  const auto x = SafetensorsCheckpoint::open(a), y = SafetensorsCheckpoint::open(b);
  EXPECT_EQ(x.names(), y.names());
  for (const auto& name : x.names())
    if (y.contains(name)) {
      EXPECT_TRUE(at::equal(x.tensor(name), y.tensor(name))) << name;
    }
}

class InitFrom : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    out_ = new fs::path(fs::temp_directory_path() / ("dsee-init-from-" + std::to_string(getpid())));
    const auto r = run_dsee(demo_run(*out_ / "src"));
    source_ok_ = r.exit_code == 0;
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() {
    dsee_test::remove_tree(*out_);
    delete out_;
  }
  void SetUp() override { ASSERT_TRUE(source_ok_) << "the source run failed"; }
  static fs::path source() { return *out_ / "src" / "demo"; }
  static inline fs::path* out_ = nullptr;
  static inline bool source_ok_ = false;
};

TEST_F(InitFrom, TrainingStartsFromTheSourceTensorsOnItsOmega) {
  const auto r = run_dsee(demo_run(*out_ / "dst", " --set train.lr=0 --set tuning.init_from=" + source().string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "train starts from " + (source() / "trainable-train.safetensors").string()));
  const auto dst = *out_ / "dst" / "demo";
  // lr = 0: the trained tensors are those training started from.
  expect_same_tensors(dst / "trainable-train.safetensors", source() / "trainable-train.safetensors");
  const auto trained = SafetensorsCheckpoint::open(source() / "trainable-train.safetensors");
  EXPECT_GT(trained.tensor("encoder.layer.0.attention.self.query.lora_B").abs().sum().item<double>(), 0.0)
      << "B starts at zero: the source must have trained it";
  const auto ours = omega_read(dst / "omega.h5"), theirs = omega_read(source() / "omega.h5");
  ASSERT_EQ(ours.size(), theirs.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i].name, theirs[i].name);
    EXPECT_TRUE(at::equal(ours[i].indices, theirs[i].indices)) << ours[i].name;
  }
}

TEST_F(InitFrom, AResumedRunKeepsItsCheckpointAndNeedsNoSource) {
  const auto copy = *out_ / "src-copy";
  ASSERT_EQ(std::system(("cp -r '" + source().string() + "' '" + copy.string() + "'").c_str()), 0);
  const auto command =
      demo_run(*out_ / "resumed", " --set train.lr=0 --set ckpt.every=1 --set tuning.init_from=" + copy.string());
  const auto first = run_dsee(command, "DSEE_TEST_STOP_AFTER_STEP=1 ");
  ASSERT_EQ(first.exit_code, 143) << first.output;
  dsee_test::remove_tree(copy);
  const auto again = run_dsee(command);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "resuming train"));
  EXPECT_FALSE(contains(again.output, "train starts from"));
  expect_same_tensors(*out_ / "resumed" / "demo" / "trainable-train.safetensors",
                      source() / "trainable-train.safetensors");
}

TEST_F(InitFrom, KeysThatChangeTheTensorsAreRefusedNamingBothRunsAndTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"tuning.rank=8", "tuning.rank = 4"},
      {"omega.c=8", "omega.c = 16"},
      {"tuning.method=lora", "tuning.method = \"dsee\""},
      {"'tuning.target_modules=[\"query\"]'", "tuning.target_modules"}};
  int i = 0;
  for (const auto& [change, theirs] : cases) {
    const auto out = *out_ / ("refused-" + std::to_string(i++));
    const auto r = run_dsee(demo_run(out, " --set " + change + " --set tuning.init_from=" + source().string()));
    EXPECT_EQ(r.exit_code, 1) << change << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "that run has " + theirs)) << change;
    EXPECT_TRUE(contains(r.output, source().string())) << change;
    EXPECT_TRUE(contains(r.output, "this run (" + (out / "demo").string() + ")")) << change;
  }
  const auto parent =
      run_dsee(demo_run(*out_ / "refused-parent", " --set tuning.init_from=" + (*out_ / "src").string()));
  EXPECT_EQ(parent.exit_code, 1);
  EXPECT_TRUE(contains(parent.output, "not a run directory (it has no config.toml)")) << parent.output;
  const auto missing =
      run_dsee(demo_run(*out_ / "refused-missing", " --set tuning.init_from=" + (*out_ / "no").string()));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(contains(missing.output, "no such run directory")) << missing.output;
}

// A LoRA tuning of a tiny BERT whose update is random (B is zero at attach).
std::shared_ptr<ModelTuning> lora_tuning(PretrainedModel& model, std::uint64_t seed) {
  TuningOptions options;
  options.method = TuningMethod::lora;
  options.rank = 2;
  options.seed = seed;
  auto tuning = tuning_attach(model, options, {});
  randomise_updates(*tuning, seed);
  return tuning;
}

TEST(InitTrainablesCopy, AHeadOfAnotherShapeIsSkippedTheUpdateCopied) {
  auto source_model = tiny_model(bert_json(), 41);
  auto source_tuning = lora_tuning(*source_model, 1);
  NamedTensors saved;
  for (auto& [name, tensor] : source_tuning->trainable_parameters()) {
    // Three labels there: one more row of the classifier.
    saved.push_back({name, name.starts_with("classifier.") ? at::cat({tensor, tensor.narrow(0, 0, 1)}) : tensor});
  }
  const auto file = fs::temp_directory_path() / ("dsee-init-copy-" + std::to_string(getpid()) + ".safetensors");
  safetensors_save(file, saved);

  auto model = tiny_model(bert_json(), 42);
  auto tuning = lora_tuning(*model, 2);
  const auto head_weight = [&] {
    for (auto& [name, tensor] : tuning->trainable_parameters())
      if (name == "classifier.weight") return tensor;
    return at::Tensor();
  };
  const auto head = head_weight().clone();
  const auto copy = init_trainables_copy(tuning->trainable_parameters(), file, "this", "that");
  EXPECT_EQ(copy.copied, std::int64_t(tuning->trainable_parameters().size()) - 2);
  ASSERT_EQ(copy.skipped.size(), 2u);
  EXPECT_TRUE(contains(copy.skipped[0], "classifier.weight ([3, 24] there, [2, 24] here)")) << copy.skipped[0];
  for (auto& [name, tensor] : tuning->trainable_parameters()) {
    if (name.starts_with("classifier.")) continue;
    for (const auto& s : source_tuning->trainable_parameters())
      if (s.name == name) {
        EXPECT_TRUE(at::equal(tensor, s.tensor)) << name;
      }
  }
  EXPECT_TRUE(at::equal(head_weight(), head));

  // An update tensor of another shape (another rank) is an error.
  saved.front().tensor = at::zeros({3, 24});
  safetensors_save(file, saved);
  const auto message = error_of([&] { init_trainables_copy(tuning->trainable_parameters(), file, "this", "that"); });
  EXPECT_TRUE(contains(message, "tuning.init_from = that: tensor '" + saved.front().name + "' is [3, 24] there"));
  EXPECT_TRUE(contains(message, "in this run (this)"));
  std::remove(file.c_str());
}

}  // namespace
}  // namespace dsee
