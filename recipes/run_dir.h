// A run directory: every path of what a run writes, the claim that ties the
// directory to one recipe, the lock that keeps a second process out, and the
// stage records. Shared by the pipeline (pipeline.h), `dsee export`
// (export.h) and `dsee report` (report.h), so a file's name is written once.
//
//   <run>/config.toml                        the recipe's identity (Recipe::identity), written first
//   <run>/.lock                              the lock's file: host, pid and start of its holder
//   <run>/stages/<stage>.json                a finished stage's results (Note [Stages and their records])
//   <run>/metrics.jsonl                      one line per step and evaluation
//   <run>/omega.h5                           Ω (core/sparsity/omega_file.h)
//   <run>/masks.h5                           the pruning plan (core/sparsity/prune_plan.h)
//   <run>/ckpt/, <run>/ckpt/retune/          the train and retune checkpoints (core/train/checkpoint.h)
//   <run>/ckpt/prune-<r>/, <run>/imp/        prune.kind = imp: round r's checkpoints, the rounds' masks,
//                                            tensors and records (Note [IMP rounds] in stage_prune_imp.cpp)
//   <run>/trainable-<stage>.safetensors      the trainable tensors after train / retune
//   <run>/trainable-<stage>-best.safetensors the same at the stage's best evaluation
//   <run>/predictions-dev.safetensors        the eval stage's dev outputs
//   <run>/hypotheses/                        the eval stage's decoded dev contexts and references (e2e, webnlg, dart)
//   <run>/summary.json                       written last
//   <run>/export/                            export.format's export
//   <run>/data/                              the demo's data; the arms of run.compare share their parent's
//
// Nothing here is a collective: under data parallelism only rank 0 calls
// what writes (stages.h wraps it in root_does).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "recipes/recipe.h"

namespace dsee {

class RunDir {
 public:
  // `dir` holds the run; `data` is the demo's data folder (default: <run>/data).
  explicit RunDir(std::filesystem::path dir);
  RunDir(std::filesystem::path dir, std::filesystem::path data);
  // run.out_dir/run.name.
  static RunDir of(const Recipe& recipe);
  RunDir(RunDir&&) noexcept;
  RunDir& operator=(RunDir&&) noexcept;
  ~RunDir();

  // Arm `name` of run.compare: <run>/<name>, sharing this run's data folder.
  RunDir arm(const std::string& name) const;

  const std::filesystem::path& path() const { return dir_; }
  std::string name() const { return dir_.filename().string(); }  // for log lines
  std::filesystem::path config() const { return dir_ / "config.toml"; }
  std::filesystem::path lock_file() const { return dir_ / ".lock"; }
  std::filesystem::path record(Stage stage) const {
    return dir_ / "stages" / (std::string(stage_name(stage)) + ".json");
  }
  std::filesystem::path metrics() const { return dir_ / "metrics.jsonl"; }
  std::filesystem::path omega() const { return dir_ / "omega.h5"; }
  std::filesystem::path masks() const { return dir_ / "masks.h5"; }
  // ckpt/ for train, ckpt/retune/ for retune.
  std::filesystem::path checkpoints(Stage stage) const;
  std::filesystem::path trainables(Stage stage) const;       // trainable-<stage>.safetensors
  std::filesystem::path best_trainables(Stage stage) const;  // trainable-<stage>-best.safetensors
  std::filesystem::path imp() const { return dir_ / "imp"; }
  std::filesystem::path imp_checkpoints(std::int64_t round) const;  // ckpt/prune-<round>/
  std::filesystem::path predictions() const { return dir_ / "predictions-dev.safetensors"; }
  std::filesystem::path hypotheses() const { return dir_ / "hypotheses"; }
  std::filesystem::path summary() const { return dir_ / "summary.json"; }
  std::filesystem::path export_dir() const { return dir_ / "export"; }
  const std::filesystem::path& data() const { return data_; }

  // Ties the directory to the recipe whose identity is `identity`: with
  // `lock`, takes the lock first; creates the directory and stages/; writes
  // config.toml, or compares it with the recorded one and refuses another
  // recipe (dsee::Error listing the differing keys).
  void claim(const std::string& identity, bool lock);
  // An exclusive flock on .lock, held until this RunDir is destroyed (or the
  // process ends, however it ends), recording this process's host, pid and
  // start time there. dsee::Error naming the holder when another process
  // holds it, or saying to set run.lock = false when the file system has no
  // flock (Note [The run directory lock] in run_dir.cpp).
  void lock();

  // The stage's record when it finished (its file exists), else nullopt.
  std::optional<nlohmann::json> record_read(Stage stage) const;
  void record_write(Stage stage, const nlohmann::json& record) const;

 private:
  std::filesystem::path dir_, data_;
  int lock_fd_ = -1;
};

}  // namespace dsee
