// Where a process sits in a data-parallel job and the few collectives that
// coordinate the ranks around rank 0: rank 0 does the file work and every
// rank learns the outcome and rank 0's text; a file rank 0 wrote is read on
// every rank and confirmed by fingerprint, which is how state (Ω, a pruning
// plan, a checkpoint) crosses the ranks: one codec per state type, its file's.
// With no communicator (one process, unit tests) each of them is the plain
// local operation.
//
// Every function taking Ranks is a collective when ranks.comm is set: all
// ranks call it, in the same order. What moves is text and file bytes; what
// they mean is the caller's.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "base/error.h"
#include "distributed/communicator.h"
#include "distributed/watchdog.h"

namespace dsee {

// Where this process sits in a data-parallel run. The default, no
// communicator, is one process without collectives.
struct Ranks {
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
std::string text_broadcast(const Ranks& ranks, const std::string& text);

// Runs `action` on rank 0 only (every write under a run directory goes
// through here) and returns its text on every rank. A barrier too: no rank
// goes on before rank 0 has finished; the others wait up to
// ranks.root_timeout_s, and a timeout names `what` rank 0 was doing (a short
// phrase: "computing Ω", "writing a checkpoint"). When rank 0 fails
// (dsee::Error), every rank throws ErrorOnEveryRank with rank 0's message.
std::string root_does(const Ranks& ranks, const std::string& what, const std::function<std::string()>& action);
void root_writes(const Ranks& ranks, const std::string& what, const std::function<void()>& write);

// A file rank 0 wrote, read on every rank: `read` runs on rank 0 first,
// inside root_writes (so its failure, a damaged file say, reaches every rank
// as ErrorOnEveryRank), then on the other ranks, which then confirm by
// fingerprint of the file's bytes that they all read the same file
// (FingerprintMismatch names `path`: the run directory must be on a file
// system every rank sees).
void read_on_every_rank(const Ranks& ranks, const std::filesystem::path& path, const std::string& what,
                        const std::function<void()>& read);
// The fingerprint check alone, for a file every rank has read.
void file_verify_across_ranks(const Ranks& ranks, const std::filesystem::path& path);

}  // namespace dsee
