// The watchdog thread (see watchdog.h for the contract).
//
// Note [dead ranks]
// A rank that dies (SIGKILL, out of memory, a node lost) leaves its peers in
// a collective that can never finish. Three things can end them, whichever
// comes first:
//  1. the launcher: mpirun's daemons see a child die and kill the rest of the
//     job ("mpirun noticed that process rank 1 ... exited on signal 9"); srun
//     does the same with --kill-on-bad-exit (set in launch/slurm.sbatch);
//  2. the transport: MPI (running with MPI_ERRORS_RETURN) or NCCL reports a
//     broken connection; the communicator throws CollectiveError, main
//     prints it and exits 1;
//  3. this watchdog: after dist.timeout_s it logs the rank, step and
//     operation, aborts NCCL and calls MPI_Abort (exit code 3).
// (3) is the guarantee; (1) and (2) are usually faster. In every case no
// rank exits 0 and none waits longer than the timeout plus a poll interval.
// MPI_Abort itself could block on a broken runtime, so a last-resort thread
// ends this process with _exit a few seconds later.
#include "distributed/watchdog.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "data/error.h"
#include "data/log.h"

namespace dsee {

Watchdog::Watchdog(double timeout_s, std::function<void(const std::string&)> on_timeout)
    : timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)) {
  DSEE_CHECK(timeout_s > 0, "dist.timeout_s must be positive, got {}", timeout_s);
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::add_abort_hook(std::function<void()> hook) {
  std::lock_guard lock(mutex_);
  abort_hooks_.push_back(std::move(hook));
}

Watchdog::Guard Watchdog::watch(std::string operation) {
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{std::move(operation), step_.load(), Clock::now(), {}});
  return Guard(this, std::prev(entries_.end()));
}

void Watchdog::watch_until(std::string operation, std::function<bool()> done) {
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{std::move(operation), step_.load(), Clock::now(), std::move(done)});
}

Watchdog::Guard::~Guard() {
  if (owner_ == nullptr) return;
  std::lock_guard lock(owner_->mutex_);
  owner_->entries_.erase(entry_);
}

std::size_t Watchdog::pending() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void Watchdog::run() {
  // A tenth of the timeout, at most a quarter second: the abort comes within
  // 10% (or 0.25 s) of the limit.
  const auto poll = std::chrono::duration<double>(std::min(0.25, timeout_s_ / 10));
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, poll);
    if (stopping_ || fired_) continue;
    const auto now = Clock::now();
    // Entries finish in order on one stream; drop those done from the front
    // and look at the oldest one still running.
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->done && it->done())
        it = entries_.erase(it);
      else
        ++it;
    }
    for (const Entry& entry : entries_) {
      const double waited = std::chrono::duration<double>(now - entry.start).count();
      if (waited > timeout_s_) {
        fired_ = true;
        const Entry copy = entry;
        lock.unlock();
        fire(copy, waited);
        lock.lock();
        break;
      }
    }
  }
}

void Watchdog::fire(const Entry& entry, double waited_s) {
  int rank = 0;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string message = fmt::format(
      "watchdog: rank {}: collective '{}' at step {} has not finished after {:.1f} s (dist.timeout_s = {}); "
      "another rank is dead, stuck or issued collectives in a different order. Aborting the job",
      rank, entry.operation, entry.step, waited_s, timeout_s_);
  if (on_timeout_) {
    on_timeout_(message);
    return;
  }
  spdlog::error("{}", message);
  spdlog::default_logger()->flush();
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard lock(mutex_);
    hooks = abort_hooks_;
  }
  for (auto& hook : hooks) hook();
  // Last resort when MPI_Abort blocks (see Note [dead ranks]).
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::fputs("watchdog: MPI_Abort did not end the process; exiting\n", stderr);
    _exit(kWatchdogExitCode);
  }).detach();
  if (initialized) MPI_Abort(MPI_COMM_WORLD, kWatchdogExitCode);
  _exit(kWatchdogExitCode);
}

}  // namespace dsee
