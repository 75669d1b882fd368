// `dsee run` and `dsee export` when the disk fails them, end to end on the
// shrunken one-arm demo recipe of test_pipeline_resume.cpp (DSEE with
// unstructured pruning, checkpoints every 2 steps, export as a merged model):
//   - a checkpoint on a full tmpfs: exit 1 with the system's reason and the
//     file, no signal, no HDF5 noise on stderr, no temporary left, the
//     previous checkpoints, their checksums and `latest` byte for byte as
//     they were; with the space freed the same command resumes and ends
//     equal to a straight run;
//   - `dsee export` into a tmpfs too small for the model;
//   - every kind of write site of a run, one at a time (config.toml, the
//     demo's model, Ω file, metrics.jsonl, checkpoint, checksum file,
//     `latest`, trainable tensors, stage record, masks, the exported model,
//     summary.json), through DSEE_TEST_FAIL_WRITE (a tmpfs cannot aim
//     at one file among a run's many: Note [Injected write failures] in
//     base/files.cpp): the same checks, and the files a failed run finished
//     are byte for byte those the rerun ends with.
// Without root (no tmpfs) the tmpfs tests report themselves skipped.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "base/hashing.h"
#include "error_of.h"
#include "run_dsee.h"
#include "tmpfs.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::file_text;
using dsee_test::run_dsee;
using dsee_test::temporaries_under;
using dsee_test::Tmpfs;

const std::string kFull = "No space left on device; free space on that file system";

// 4 train steps and 4 retune steps; the merged model exported.
std::string one_arm(const fs::path& out) {
  return dsee_test::one_arm_run(out, " --set train.epochs=1 --set export.format=hf");
}

nlohmann::json json_of(const fs::path& path) { return nlohmann::json::parse(file_text(path)); }

// What must match bit for bit between two finished runs (test_pipeline_resume.cpp).
void expect_same_results(const fs::path& a, const fs::path& b) {
  for (const char* file : {"trainable-train.safetensors", "trainable-retune.safetensors",
                           "trainable-train-best.safetensors", "trainable-retune-best.safetensors", "metrics.jsonl",
                           "predictions-dev.safetensors", "export/model.safetensors", "export/config.json"})
    EXPECT_EQ(file_text(a / file), file_text(b / file)) << file;
  for (const char* stage : {"train", "prune", "retune", "eval"})
    EXPECT_EQ(json_of(a / "stages" / (std::string(stage) + ".json"))["dev"],
              json_of(b / "stages" / (std::string(stage) + ".json"))["dev"])
        << stage;
}

// A failed command as the user sees it: exit 1 (no signal), one error
// naming the file and the system's reason, none of HDF5's own printing.
void expect_clean_failure(const dsee_test::Result& r, const std::string& file) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "dsee: error: "));
  EXPECT_TRUE(contains(r.output, kFull));
  EXPECT_TRUE(contains(r.output, file));
  for (const char* noise : {"HDF5-DIAG", "HDF5:", "FL,FL", "infinite loop"})
    EXPECT_FALSE(contains(r.output, noise)) << "HDF5 printed " << noise << ":\n" << r.output;
}

// Every file under `dir` with its bytes.
std::map<std::string, std::string> files_under(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) files[fs::relative(entry.path(), dir).string()] = file_text(entry.path());
  return files;
}

// The straight run the others are compared with, made once per dsee binary
// and shared by the test processes (ctest runs each test in a process of its
// own, two at a time): under the build folder, keyed by the binary's size and
// time, made under a lock.
fs::path straight_run() {
  const fs::path root = fs::path(DSEE_TEST_WORK_DIR) / "full-disk-straight";
  fs::create_directories(root);
  struct stat binary {};
  EXPECT_EQ(::stat(DSEE_BINARY, &binary), 0);
  const fs::path dir = root / fmt::format("{}-{}.{}", binary.st_size, binary.st_mtim.tv_sec, binary.st_mtim.tv_nsec);
  const int lock = ::open((root / "lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  EXPECT_GE(lock, 0);
  ::flock(lock, LOCK_EX);
  if (!fs::exists(dir / "done")) {
    std::system(("cd '" + root.string() + "' && rm -rf -- */").c_str());  // runs of older binaries
    const auto r = run_dsee(one_arm(dir));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code == 0) std::ofstream(dir / "done") << "\n";
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return dir / "demo";
}

class FullDisk : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    out_ = new fs::path(fs::temp_directory_path() / ("dsee-full-disk-" + std::to_string(getpid())));
    straight_ = new fs::path(straight_run());
  }
  static void TearDownTestSuite() {
    std::system(("rm -rf '" + out_->string() + "'").c_str());
    delete out_;
    delete straight_;
  }
  void SetUp() override { ASSERT_TRUE(fs::exists(straight_->parent_path() / "done")) << "the straight run failed"; }
  static const fs::path& straight() { return *straight_; }
  static inline fs::path* out_ = nullptr;
  static inline fs::path* straight_ = nullptr;
};

TEST_F(FullDisk, ACheckpointOnAFullDiskFailsCleanlyAndTheRunResumesOnceThereIsSpace) {
  Tmpfs disk(64 << 20);
  DSEE_SKIP_WITHOUT_TMPFS(disk);
  const auto dir = disk.path() / "demo";
  const auto ckpt = dir / "ckpt";
  const auto stopped = run_dsee(one_arm(disk.path()), "DSEE_TEST_STOP_AFTER_STEP=3 ");
  ASSERT_EQ(stopped.exit_code, 143) << stopped.output;
  const auto before = files_under(ckpt);
  ASSERT_TRUE(before.count("step-3.h5") && before.count("step-3.h5.sum") && before.count("latest"));
  // Room for the next metrics lines, not for the step-4 checkpoint.
  disk.leave_free(before.at("step-3.h5").size() / 2 / 4096 * 4096);

  const auto failed = run_dsee(one_arm(disk.path()));
  expect_clean_failure(failed, (ckpt / "step-4.h5").string());
  EXPECT_TRUE(contains(failed.output, "resuming train from ckpt/step-3.h5")) << failed.output;
  EXPECT_EQ(files_under(ckpt), before);
  EXPECT_TRUE(temporaries_under(disk.path()).empty());

  disk.free_filler();
  const auto resumed = run_dsee(one_arm(disk.path()));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming train from ckpt/step-3.h5")) << resumed.output;
  expect_same_results(straight(), dir);
}

TEST_F(FullDisk, AnExportTooLargeForTheDiskFailsCleanly) {
  Tmpfs disk(16 << 10);
  DSEE_SKIP_WITHOUT_TMPFS(disk);
  const auto out = disk.path() / "export";
  const auto failed = run_dsee("export " + straight().string() + " --format hf --out " + out.string());
  expect_clean_failure(failed, (out / "model.safetensors").string());
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(temporaries_under(disk.path()).empty());
  const auto again = *out_ / "export-again";
  const auto exported = run_dsee("export " + straight().string() + " --format hf --out " + again.string());
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_EQ(files_under(again), files_under(straight() / "export"));
}

// DSEE_TEST_FAIL_WRITE=<name>: the first write of that file fails with ENOSPC.
class WriteSite : public FullDisk, public ::testing::WithParamInterface<std::string> {};

TEST_P(WriteSite, FailsCleanlyKeepsWhatWasFinishedAndTheRerunEndsEqual) {
  const std::string name = GetParam();
  const auto base = *out_ / ("site-" + std::to_string(std::hash<std::string>()(name)));
  const auto dir = base / "demo";
  const auto failed = run_dsee(one_arm(base), "DSEE_TEST_FAIL_WRITE=" + name + " ");
  expect_clean_failure(failed, name);
  ASSERT_TRUE(fs::exists(dir)) << failed.output;
  EXPECT_TRUE(temporaries_under(dir).empty());
  // Checkpoints that have a checksum file match it (the write order is
  // checkpoint, checksum, `latest`: Note [Checkpoint integrity]).
  for (const auto& [file, bytes] : files_under(dir))
    if (file.ends_with(".h5.sum")) {
      const fs::path checkpoint = dir / file.substr(0, file.size() - 4);
      EXPECT_EQ(bytes.substr(0, 64), sha256_file(checkpoint)) << file;
    }
  const auto finished = files_under(dir);

  const auto rerun = run_dsee(one_arm(base));
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  expect_same_results(straight(), dir);
  // What the failed run finished, the rerun kept: checkpoints may be
  // rotated away, metrics.jsonl cut back to a checkpoint and regrown, and
  // .lock names its holder, the rerun now. The eval stage runs again
  // whenever it is listed (stage_eval.cpp), so its record is rewritten:
  // equal but for its own `seconds`.
  const auto without_seconds = [](const std::string& text) {
    auto json = nlohmann::json::parse(text);
    json.erase("seconds");
    return json;
  };
  const auto now = files_under(dir);
  for (const auto& [file, bytes] : finished) {
    if (!now.count(file) || file.starts_with("ckpt/") || file == "metrics.jsonl" || file == ".lock") continue;
    if (file == "stages/eval.json")
      EXPECT_EQ(without_seconds(now.at(file)), without_seconds(bytes)) << file << " changed after the failed run";
    else
      EXPECT_TRUE(now.at(file) == bytes) << file << " changed after the failed run";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryFile, WriteSite,
                         ::testing::Values("config.toml", "pretrained/model.safetensors", "omega.h5", "metrics.jsonl",
                                           "ckpt/step-4.h5", "step-4.h5.sum", "ckpt/latest",
                                           "trainable-train.safetensors", "stages/train.json", "masks.h5",
                                           "export/model.safetensors", "summary.json"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name;
                           for (const char c : info.param)
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace dsee
