// Training checkpoints: everything needed to resume a DSEE run
// bit-exactly, in one HDF5 file per step, a few MB for BERT-base because the
// frozen pretrained weights are not stored (only their path and a hash).
//
//   <dir>/step-<N>.h5       the checkpoint (schema: docs/checkpoints.md,
//                           Note [Checkpoint schema] in checkpoint.cpp)
//   <dir>/step-<N>.h5.sum   "<sha256 hex>  step-<N>.h5\n" (`sha256sum -c` format)
//   <dir>/latest            "step-<N>.h5\n", replaced last
//
// Every file is written to a temporary, fsynced, renamed and the folder
// fsynced; datasets carry Fletcher-32. Loading verifies the sidecar and the
// Fletcher-32 sums and falls back to the previous checkpoint, with a
// warning, when the newest one is truncated or corrupted.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/hashing.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "core/sparsity/prune_plan.h"
#include "core/tuning/tuning.h"

namespace dsee {

struct CheckpointState {
  std::int64_t step = 0;          // optimizer steps taken
  std::int64_t epoch = 0;         // current epoch (0-based)
  std::int64_t sample_index = 0;  // global samples consumed in this epoch (any number of ranks)

  NamedTensors trainable;  // by name, any dtype/shape, CPU or CUDA (read back on CPU)
  NamedTensors best;       // the trainable tensors at the best evaluation so far; empty: none
  NamedTensors optimizer;  // optimizer state by name ("<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step")
  std::int64_t optimizer_step = 0;
  std::map<std::string, double> scheduler;  // scheduler state ("last_epoch", "base_lr", …)

  at::Tensor rng_cpu;                // uint8, at::Generator::get_state() of the default CPU generator
  std::vector<at::Tensor> rng_cuda;  // uint8, one per CUDA device; empty without CUDA

  std::vector<OmegaEntry> omega;
  OmegaFileInfo omega_info;
  PrunePlan plan;

  std::string config_text;               // the resolved TOML (Config::to_toml)
  std::string model_path;                // the pretrained model folder
  std::uint64_t model_weights_hash = 0;  // model_weights_hash(model_path)

  // Filled by checkpoint_read (written from build_info() and config_hash()).
  std::uint64_t config_hash = 0;
  std::int64_t format_version = 0;
  std::map<std::string, std::string> versions;  // "dsee", "torch", "hdf5"
};

// Writes <dir>/step-<state.step>.h5, its sidecar, then <dir>/latest; creates
// <dir> if needed; then removes all but the newest `keep_last` (≥ 1)
// checkpoints. Returns the checkpoint's path. Throws dsee::Error on I/O
// failure or a name containing '/'; nothing partial is left under the final names.
std::filesystem::path checkpoint_write(const std::filesystem::path& dir, const CheckpointState& state, int keep_last);

// Reads one checkpoint after verifying its sidecar (when `verify_sidecar`);
// every tensor comes back bit-exact on the CPU. dsee::Error names the file
// and the dataset on any mismatch, bad dtype, checksum failure or truncation.
CheckpointState checkpoint_read(const std::filesystem::path& path, bool verify_sidecar = true);

struct LoadedCheckpoint {
  std::filesystem::path path;
  CheckpointState state;
};

// The checkpoint `latest` names; if it is missing, truncated or corrupted, a
// warning is logged and the others are tried newest first. nullopt when the
// folder holds no checkpoint; dsee::Error listing every failure when none reads.
std::optional<LoadedCheckpoint> checkpoint_load_latest(const std::filesystem::path& dir);
// Removes every checkpoint of `dir` (step-N.h5, their sidecars, `latest`)
// and the folder when nothing else is left in it; no folder: nothing to do.
void checkpoints_remove(const std::filesystem::path& dir);

// Refuses (dsee::Error naming `checkpoint`) to resume from `state` under
// `config_text` when the recipes differ, listing every differing key
// (config_differences in base/config.h); keys in `ignore` (exact dotted
// names) may differ. Also refuses when the pretrained weights' hash differs.
void checkpoint_check_compatible(const std::filesystem::path& checkpoint, const CheckpointState& state,
                                 const std::string& config_text, std::uint64_t model_weights_hash,
                                 const std::vector<std::string>& ignore = {});

// hash64 (base/hashing.h) of the config text.
std::uint64_t config_hash(const std::string& config_text);
// hash64 over every tensor of a model folder (model.safetensors or shards),
// in sorted name order: name, dtype, shape and raw bytes (Note [Model weights hash]).
std::uint64_t model_weights_hash(const std::filesystem::path& model_dir);

// The default generators' states now / restored from `state` (CUDA ones only
// for devices present in both).
void checkpoint_capture_rng(CheckpointState& state);
void checkpoint_restore_rng(const CheckpointState& state);

}  // namespace dsee
