#include "distributed/stop_signal.h"

#include <ATen/ATen.h>

#include <atomic>
#include <csignal>

namespace dsee {
namespace {

std::atomic<int> received{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

extern "C" void on_stop_signal(int signal) {
  int expected = 0;
  if (!received.compare_exchange_strong(expected, signal)) {
    // The second signal: the default action (terminate).
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a blocking read interrupted by the signal resumes
  for (const int signal : {SIGTERM, SIGINT, SIGUSR1}) sigaction(signal, &action, nullptr);
}

// Note [A decided stop ignores later signals]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Under `srun --kill-on-bad-exit` the first rank to exit with 128 + signal
// is a bad exit to srun, which sends SIGTERM to the ranks still running. A
// rank a few instructions from its own exit would die of it (the second
// signal's default action), and srun, which reports a signal before any exit
// code, would end with 143 however the job was stopped: the batch script
// could no longer tell the time limit's USR1 (138, requeue) from a crash.
// Once every rank has agreed to stop and the checkpoint is on disk, nothing
// is left for a second signal to cut short, so the ranks ignore it.
void stop_signals_ignore() {
  for (const int signal : {SIGTERM, SIGINT, SIGUSR1}) std::signal(signal, SIG_IGN);
}

bool stop_requested() { return received.load() != 0; }
int stop_signal() { return received.load(); }

bool stop_requested_on_any_rank(Communicator& comm) {
  at::Tensor flag = at::full({1}, std::int64_t{stop_requested() ? 1 : 0}, at::kLong).to(comm.device());
  comm.all_reduce_sum(flag);
  return flag.cpu().item<std::int64_t>() > 0;
}

}  // namespace dsee
