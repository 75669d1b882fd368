// Stopping on a signal (Slurm pre-emption, Ctrl-C, a scheduler's time limit).
//
// install_stop_handlers() makes the first SIGTERM, SIGINT or SIGUSR1 only
// set a flag; the training loop polls it between optimizer steps (never
// inside one, so no rank leaves a collective half-issued), writes a
// checkpoint (`dsee run` installs the handlers when run.checkpoint_on_signal
// is true), and throws StopRequested, which launch/main.cpp turns into exit
// status 128 + signal (143 for SIGTERM, 130 for SIGINT); running the same
// command again resumes from the checkpoint. A second signal of the same
// kind ends the process at once, as if no handler were installed.
//
// Ranks can receive the signal at different times (or only one rank can), so
// the loop must decide together: stop_requested_on_any_rank() is a collective
// (a sum over ranks of the local flag), called at the same step on every
// rank.
#pragma once

#include <stdexcept>
#include <string>

#include "distributed/communicator.h"

namespace dsee {

void install_stop_handlers();
// This process received a stop signal (async-signal-safe to read).
bool stop_requested();
// The signal number received first, 0 if none.
int stop_signal();
// A collective: true on every rank when any rank has a stop request.
bool stop_requested_on_any_rank(Communicator& comm);
// The stop is decided and its checkpoint written: from here on SIGTERM,
// SIGINT and SIGUSR1 are ignored while the process winds down (Note [A
// decided stop ignores later signals] in stop_signal.cpp).
void stop_signals_ignore();

// Thrown after a stop signal once the checkpoint is written; not a
// dsee::Error (nothing went wrong). what() is the message for the user.
class StopRequested : public std::runtime_error {
 public:
  StopRequested(int signal, const std::string& message) : std::runtime_error(message), signal_(signal) {}
  int signal() const { return signal_; }
  int exit_code() const { return 128 + signal_; }

 private:
  int signal_;
};

}  // namespace dsee
