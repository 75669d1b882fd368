// `dsee run` resuming interrupted training stages (docs/training.md,
// 'Resuming `dsee run`'), end to end on a shrunken one-arm demo recipe (DSEE
// with unstructured pruning, so both the train and the retune stage run;
// dropout and gradient accumulation on):
//   - a run stopped by SIGTERM (DSEE_TEST_STOP_AFTER_STEP makes the process
//     signal itself) exits 143 naming the checkpoint; re-running the same
//     command resumes; after several interruptions in both stages the
//     trainable tensors, metrics.jsonl and the stages' dev metrics are bit
//     for bit those of a straight run;
//   - a checkpoint is refused under a different recipe, listing the key;
//   - a corrupted newest checkpoint falls back to the previous one, and the
//     metrics lines written after that one are cut away;
//   - a stage killed before its first checkpoint starts afresh on the next
//     run without leaving its earlier metrics lines twice;
//   - with run.checkpoint_on_signal = false a signal stops the run the same
//     way without writing a checkpoint;
//   - a second run on a directory in use stops at once naming the first, and
//     after the first is killed (SIGKILL) the next run resumes.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "error_of.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::run_dsee;

// 8 train steps, 4 retune steps.
std::string one_arm(const fs::path& out) { return dsee_test::one_arm_run(out, " --set train.epochs=2"); }

nlohmann::json json_of(const fs::path& path) { return nlohmann::json::parse(file_text(path)); }

// What must match bit for bit between two run folders.
void expect_same_results(const fs::path& a, const fs::path& b) {
  for (const char* file : {"trainable-train.safetensors", "trainable-retune.safetensors",
                           "trainable-train-best.safetensors", "trainable-retune-best.safetensors", "metrics.jsonl"})
    EXPECT_EQ(file_text(a / file), file_text(b / file)) << file;
  for (const char* stage : {"train", "prune", "retune", "eval"}) {
    const auto x = json_of(a / "stages" / (std::string(stage) + ".json"));
    const auto y = json_of(b / "stages" / (std::string(stage) + ".json"));
    EXPECT_EQ(x["dev"], y["dev"]) << stage;  // doubles compared exactly
    EXPECT_EQ(x.value("steps", -1), y.value("steps", -1)) << stage;
    EXPECT_EQ(x.value("best", nlohmann::json()), y.value("best", nlohmann::json())) << stage;  // carried by /best
  }
}

// One straight run shared by the tests (each test adds its own run folders).
class PipelineResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    out_ = new fs::path(fs::temp_directory_path() / ("dsee-pipeline-resume-" + std::to_string(getpid())));
    const auto r = run_dsee(one_arm(*out_ / "straight"));
    straight_ok_ = r.exit_code == 0;
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() {
    std::system(("rm -rf '" + out_->string() + "'").c_str());
    delete out_;
  }
  void SetUp() override { ASSERT_TRUE(straight_ok_) << "the straight run failed"; }
  static inline fs::path* out_ = nullptr;
  static inline bool straight_ok_ = false;
};

TEST_F(PipelineResume, SigtermThenRerunsMatchAStraightRun) {
  const auto dir = *out_ / "stopped";
  const std::string stop = "DSEE_TEST_STOP_AFTER_STEP=3 ";
  // train steps 1-3 | 4-6 | 7-8 then retune 1-3 | retune 4.
  const auto first = run_dsee(one_arm(dir), stop);
  ASSERT_EQ(first.exit_code, 143) << first.output;
  EXPECT_TRUE(contains(first.output, "stopped by SIGTERM at step 3 of 8; checkpoint " +
                                         (dir / "demo" / "ckpt" / "step-3.h5").string() +
                                         "; run the same command again to resume"))
      << first.output;
  const auto second = run_dsee(one_arm(dir), stop);
  ASSERT_EQ(second.exit_code, 143) << second.output;
  EXPECT_TRUE(contains(second.output, "resuming train from ckpt/step-3.h5 (step 3 of 8)")) << second.output;
  EXPECT_TRUE(contains(second.output, "stopped by SIGTERM at step 6 of 8")) << second.output;
  const auto third = run_dsee(one_arm(dir), stop);
  ASSERT_EQ(third.exit_code, 143) << third.output;
  EXPECT_TRUE(contains(third.output, "resuming train from ckpt/step-6.h5 (step 6 of 8)")) << third.output;
  EXPECT_TRUE(contains(third.output, "stopped by SIGTERM at step 3 of 4")) << third.output;
  // keep_last = 2: of train's checkpoints 2, 3, 4, 6, 8 the last two remain.
  for (const char* name : {"step-2.h5", "step-3.h5", "step-4.h5"})
    EXPECT_FALSE(fs::exists(dir / "demo" / "ckpt" / name)) << name;
  for (const char* name : {"step-6.h5", "step-8.h5", "retune/step-3.h5"})
    EXPECT_TRUE(fs::exists(dir / "demo" / "ckpt" / name)) << name;
  const auto fourth = run_dsee(one_arm(dir), stop);
  ASSERT_EQ(fourth.exit_code, 0) << fourth.output;
  EXPECT_TRUE(contains(fourth.output, "resuming retune from ckpt/retune/step-3.h5 (step 3 of 4)")) << fourth.output;
  expect_same_results(*out_ / "straight" / "demo", dir / "demo");
}

// run.checkpoint_on_signal = false: the signal still stops the loop at a
// step boundary with exit 143, but no checkpoint is written; the next run
// resumes from the periodic one (ckpt.every = 2).
TEST_F(PipelineResume, SignalWithoutCheckpointStopsAndResumesFromThePeriodicOne) {
  const auto dir = *out_ / "no-checkpoint-on-signal";
  const std::string command = one_arm(dir) + " --set run.checkpoint_on_signal=false";
  const auto first = run_dsee(command, "DSEE_TEST_STOP_AFTER_STEP=3 ");
  ASSERT_EQ(first.exit_code, 143) << first.output;
  EXPECT_TRUE(contains(first.output,
                       "stopped by SIGTERM at step 3 of 8; no checkpoint written (run.checkpoint_on_signal = false); "
                       "running the same command again resumes from " +
                           (dir / "demo" / "ckpt" / "step-2.h5").string()))
      << first.output;
  EXPECT_TRUE(fs::exists(dir / "demo" / "ckpt" / "step-2.h5"));
  EXPECT_FALSE(fs::exists(dir / "demo" / "ckpt" / "step-3.h5"));
  const auto second = run_dsee(command);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_TRUE(contains(second.output, "resuming train from ckpt/step-2.h5 (step 2 of 8)")) << second.output;
  expect_same_results(*out_ / "straight" / "demo", dir / "demo");
}

TEST_F(PipelineResume, OtherRecipeIsRefusedAndACorruptCheckpointFallsBack) {
  const auto dir = *out_ / "corrupt";
  const auto first = run_dsee(one_arm(dir), "DSEE_TEST_STOP_AFTER_STEP=5 ");
  ASSERT_EQ(first.exit_code, 143) << first.output;
  const auto ckpt = dir / "demo" / "ckpt";
  ASSERT_TRUE(fs::exists(ckpt / "step-4.h5"));
  ASSERT_TRUE(fs::exists(ckpt / "step-5.h5"));

  // The run folder's config.toml gone, another recipe still meets the checkpoint's.
  const std::string recorded = file_text(dir / "demo" / "config.toml");
  fs::remove(dir / "demo" / "config.toml");
  const auto other = run_dsee(one_arm(dir) + " --set train.weight_decay=0.5");
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_TRUE(contains(other.output, "was written by a different recipe")) << other.output;
  EXPECT_TRUE(contains(other.output, "train.weight_decay")) << other.output;
  std::ofstream(dir / "demo" / "config.toml") << recorded;

  // Flip bytes in the middle of the newest checkpoint.
  {
    std::fstream file(ckpt / "step-5.h5", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(fs::file_size(ckpt / "step-5.h5") / 2));
    file.write("corrupt!", 8);
  }
  const auto again = run_dsee(one_arm(dir));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "resuming train from ckpt/step-4.h5 (step 4 of 8)")) << again.output;
  expect_same_results(*out_ / "straight" / "demo", dir / "demo");
}

// A kill before a stage's first checkpoint (SIGKILL, out of memory, or
// run.checkpoint_on_signal = false) leaves metrics lines, no checkpoint and
// no stages/<stage>.json: mimicked by a SIGTERM stop whose checkpoints are
// then deleted (train), and by deleting a finished retune's checkpoints and
// records (retune, with the eval after it). The re-runs start each stage
// afresh, and metrics.jsonl must equal the straight run's byte for byte.
TEST_F(PipelineResume, AStageKilledBeforeItsFirstCheckpointRerunsToAStraightRun) {
  const auto dir = *out_ / "killed";
  const auto run_dir = dir / "demo";
  const auto first = run_dsee(one_arm(dir), "DSEE_TEST_STOP_AFTER_STEP=3 ");
  ASSERT_EQ(first.exit_code, 143) << first.output;
  ASSERT_FALSE(fs::exists(run_dir / "stages" / "train.json"));
  std::system(("rm -rf '" + (run_dir / "ckpt").string() + "'").c_str());
  const auto second = run_dsee(one_arm(dir));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_FALSE(contains(second.output, "resuming train")) << second.output;
  EXPECT_TRUE(contains(second.output, "train starts afresh")) << second.output;
  expect_same_results(*out_ / "straight" / "demo", run_dir);

  std::system(("rm -rf '" + (run_dir / "ckpt" / "retune").string() + "'").c_str());
  for (const char* stage : {"retune", "eval"}) fs::remove(run_dir / "stages" / (std::string(stage) + ".json"));
  const auto third = run_dsee(one_arm(dir));
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_TRUE(contains(third.output, "retune starts afresh")) << third.output;
  expect_same_results(*out_ / "straight" / "demo", run_dir);
}

// `dsee <arguments>` started in the background with `environment` (NAME=VALUE
// words), its output in `log`; the process id is dsee's own.
pid_t dsee_start(const std::string& arguments, const std::string& environment, const fs::path& log) {
  const std::string command =
      "exec env " + environment + " " + DSEE_BINARY + " " + arguments + " > '" + log.string() + "' 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Note [The run directory lock] in recipes/run_dir.cpp: while a run trains
// (slowed down by the step pause), a second `dsee run` on its directory
// fails at once naming it; SIGKILL releases the lock, and the next run takes
// it and resumes to the straight run's result. run.lock is not part of the
// run's identity: a run without the lock continues the same directory.
TEST_F(PipelineResume, ASecondRunIsRefusedWhileTheFirstRunsAndAKilledRunNeverBlocks) {
  const auto dir = *out_ / "locked";
  const auto run_dir = dir / "demo";
  const pid_t first = dsee_start(one_arm(dir), "DSEE_TEST_STEP_PAUSE_S=3", *out_ / "locked.log");
  ASSERT_GT(first, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (!fs::exists(run_dir / "ckpt" / "step-2.h5") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(fs::exists(run_dir / "ckpt" / "step-2.h5")) << file_text(*out_ / "locked.log");

  const auto second = run_dsee(one_arm(dir));
  EXPECT_EQ(second.exit_code, 1) << second.output;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_TRUE(contains(second.output, "run directory '" + run_dir.string() +
                                          "' is in use: another dsee process "
                                          "holds its lock"))
      << second.output;
  EXPECT_TRUE(contains(second.output, "(host " + std::string(host) + ", pid " + std::to_string(first) + ", started "))
      << second.output;
  EXPECT_FALSE(contains(second.output, "finished before")) << second.output;  // refused before any stage

  ASSERT_EQ(kill(first, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(first, &status, 0), first);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << file_text(*out_ / "locked.log");

  const auto third = run_dsee(one_arm(dir));
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_TRUE(contains(third.output, "resuming ")) << third.output;
  expect_same_results(*out_ / "straight" / "demo", run_dir);

  const auto unlocked = run_dsee(one_arm(dir) + " --set run.lock=false");
  ASSERT_EQ(unlocked.exit_code, 0) << unlocked.output;
  EXPECT_TRUE(contains(unlocked.output, "stage retune finished before, skipped")) << unlocked.output;
}

}  // namespace
}  // namespace dsee
