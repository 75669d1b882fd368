// The checkpoints of a training stage (Note [Resuming a training stage] in
// train_checkpoints.cpp): written from the trainer's checkpoint hook into
// ckpt/ (retune: ckpt/retune/), the newest one restored when the stage starts
// again, and the message of a stop that names the one to resume from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "base/named_tensor.h"
#include "core/train/trainer.h"
#include "recipes/stages.h"

namespace dsee {

// The trainable tensors at the best evaluation so far (Note [The best
// evaluation] in stage_train.cpp); step -1: none.
struct BestTensors {
  NamedTensors tensors;
  std::int64_t step = -1;
};

class StageCheckpoints {
 public:
  // Checkpoints in `dir` (a TrainPass's); `best` is read at every checkpoint
  // (checkpoints carry it).
  StageCheckpoints(Run& run, std::filesystem::path dir, const BestTensors& best);

  // The newest readable checkpoint of the stage, restored into the tuning,
  // `trainer`'s optimizer, the generators and `best`: its progress, or
  // nullopt when the stage has none. Keeps `trainer` for write().
  std::optional<TrainerProgress> resume(Trainer& trainer, BestTensors& best);
  // The trainer's checkpoint hook (rank 0 writes, every rank learns the path).
  void write(const TrainerProgress& progress);
  // The checkpoint resume() restored ("": none).
  const std::string& resumed_from() const { return resumed_from_; }
  // The stop a signal asked for after `steps` of `total`, as the error that
  // ends the process (exit 128 + signal), naming where to resume from.
  [[noreturn]] void stopped(std::int64_t steps, std::int64_t total) const;

 private:
  Run& run_;
  std::filesystem::path dir_;
  const BestTensors& best_;
  Trainer* trainer_ = nullptr;
  std::string resumed_from_;
  std::filesystem::path last_;  // the newest checkpoint this process wrote
  std::int64_t last_step_ = -1;
};

}  // namespace dsee
