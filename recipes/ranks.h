// The pipeline's rank plumbing: where a process sits in a data-parallel run
// and the few collectives the stages build on — rank 0 does the file work and
// every rank learns the outcome, rank 0's tensors (Ω, the pruning plan, a
// checkpoint it read) reach every rank. With no communicator (one process,
// unit tests) each of them is the plain local operation.
//
// Every function taking PipelineRanks is a collective when ranks.comm is
// set: all ranks call it, in the same order (Note [Data parallelism in the
// pipeline] in pipeline.cpp).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/prune_plan.h"
#include "core/train/checkpoint.h"
#include "distributed/communicator.h"
#include "distributed/fingerprint.h"
#include "distributed/watchdog.h"

namespace dsee {

// Where this process sits in a data-parallel run. The default, no
// communicator, is one process without collectives.
struct PipelineRanks {
  Communicator* comm = nullptr;  // not owned; every rank of the job holds one
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;       // on this node: picks the GPU (core/model/device.h)
  std::string mpi_library;  // compared across ranks with the other library versions
  // The communicator's watchdog (not owned; may be null): root_does bounds
  // the other ranks' wait for rank 0's work by root_timeout_s instead of
  // dist.timeout_s (Note [long waits] in distributed/watchdog.cpp).
  Watchdog* watchdog = nullptr;
  double root_timeout_s = 7200;  // dist.root_timeout_s
  bool root() const { return rank == 0; }
};

// Thrown at the same point on every rank (rank 0 failed to write or refused
// the run directory and told the others): the ranks may exit normally.
class ErrorOnEveryRank : public Error {
 public:
  using Error::Error;
};

// Rank 0's text on every rank.
std::string text_broadcast(const PipelineRanks& ranks, const std::string& text);

// Runs `action` on rank 0 only (every write under the run directory goes
// through here) and returns its text on every rank. A barrier too: no rank
// goes on before rank 0 has finished; the others wait up to
// ranks.root_timeout_s, and a timeout names `what` rank 0 was doing (a short
// phrase: "computing Ω", "writing a checkpoint"). When rank 0 fails
// (dsee::Error), every rank throws ErrorOnEveryRank with rank 0's message.
std::string root_does(const PipelineRanks& ranks, const std::string& what, const std::function<std::string()>& action);
void root_writes(const PipelineRanks& ranks, const std::string& what, const std::function<void()>& write);

// Rank 0's value of `on_root` on every rank, on the communicator's device
// (checked by fingerprint, labelled `label`).
NamedTensors from_root(const PipelineRanks& ranks, const NamedTensors& on_root, const std::string& label);

// Ω of `matrices` with the matrices split across the ranks (omega.split_across_ranks):
// rank r computes its contiguous shard_range of them (OmegaOptions::first,
// count) and every rank receives all entries, in the input's order — the
// same entries one process computes. One process: omega_select.
std::vector<OmegaEntry> omega_select_across_ranks(const PipelineRanks& ranks, const std::vector<NamedMatrix>& matrices,
                                                  OmegaOptions options);

// Ω and a pruning plan as named tensors, for from_root, and back (on the CPU).
NamedTensors omega_to_named(const std::vector<OmegaEntry>& omega);
std::vector<OmegaEntry> omega_from_named(const NamedTensors& named);
NamedTensors prune_plan_to_named(const PrunePlan& plan);
PrunePlan prune_plan_from_named(const NamedTensors& named);

// Resume under data parallelism: rank 0 read the checkpoint into `state`;
// every other rank receives the parts a resume uses (trainable tensors, the
// best evaluation's tensors, AdamW state, the trainer's progress, the
// generators' states), on the CPU.
void checkpoint_state_from_root(const PipelineRanks& ranks, CheckpointState& state);

}  // namespace dsee
