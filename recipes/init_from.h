// tuning.init_from: a run whose update starts from another finished run's
// trainable tensors, as LoRA's RoBERTa recipe starts MRPC, RTE and STS-B from
// the MNLI-tuned update (docs/recipes.md, 'Starting from another run').
//
// The source is a run directory whose train stage finished; its final tensors
// are trainable-retune.safetensors when it re-tuned, else
// trainable-train.safetensors. It must be tuned as this run is: the same
// tuning.method, tuning.rank and tuning.target_modules, and for DSEE the same
// omega.* keys that make Ω (c, method, variant, seed, max_rank, tol), and no
// head pruning (its tensors would fit the shrunk model only); anything else is
// a dsee::Error naming both runs and the key. A DSEE run adopts the source's
// Ω: its omega stage copies the source's omega.h5 instead of computing one,
// so the S values stay on the entries they were trained on.
//
// The train stage, when it starts afresh (never over a checkpoint it resumes
// from), copies the tensors in: every tensor of the update (A, B, S values)
// must be in the source with this run's shape; a task-head tensor (any other
// name) is copied when its shape matches, and otherwise (MNLI's 3 labels
// against RTE's 2) skipped with a log line, keeping its fresh initialisation.
// Rank 0 checks the source; every rank reads the tensors (read_on_every_rank).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "base/named_tensor.h"
#include "recipes/stages.h"

namespace dsee {

struct InitSource {
  std::filesystem::path dir;         // tuning.init_from
  std::filesystem::path trainables;  // its final trainable tensors
};

// tuning.init_from checked against this run's recipe (on rank 0; its
// dsee::Error reaches every rank).
InitSource init_source_check(const Run& run);

struct InitCopy {
  std::int64_t copied = 0;
  std::vector<std::string> skipped;  // head tensors left as they were, with the reason
};

// Copies the tensors of `file` into `trainables` in place by name (the rules
// above; `this_run` and `source_run` name the runs in errors).
InitCopy init_trainables_copy(const NamedTensors& trainables, const std::filesystem::path& file,
                              const std::string& this_run, const std::string& source_run);

// The train stage's start: the source's tensors into run.tuning, logged.
void init_from_apply(Run& run);

}  // namespace dsee
