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
//  3. this watchdog: after the collective's bound (dist.timeout_s, or
//     dist.root_timeout_s inside a LongWait) it logs the rank, step and
//     operation, aborts NCCL and calls MPI_Abort (exit code 3); an NCCL
//     collective whose communicator reports an asynchronous error ends the
//     job the same way at the next poll, without waiting for the bound.
// (3) is the guarantee; (1) and (2) are usually faster. In every case no
// rank exits 0 and none waits longer than its bound plus a poll interval
// and the teardown. MPI_Abort itself could block on a broken runtime, so a
// last-resort thread ends this process with _exit a few seconds later.
//
// Note [long waits]
// Some waits are long by design: while rank 0 alone computes Ω (without
// omega.split_across_ranks: about an hour for RoBERTa-large's 48 matrices
// with the reference variant on one core), prepares the data or writes a
// checkpoint or an export, the other ranks sit in root_does's broadcast.
// Bounding that by dist.timeout_s would kill healthy jobs, and raising
// dist.timeout_s would slow the detection of every dead rank. So a
// LongWaitScope gives the collectives issued inside it their own bound and
// a name for what they wait for; ordinary collectives keep dist.timeout_s.
// A dead rank still ends the job at once through (1); a rank 0 that hangs
// in its work is caught after the long bound.
#include "distributed/watchdog.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "base/error.h"
#include "base/log.h"

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

Watchdog::Entry Watchdog::entry_now(std::string operation) {
  Entry entry{std::move(operation), step_.load(), Clock::now(), timeout_s_, long_wait_, {}, {}};
  if (long_wait_) entry.timeout_s = long_wait_->timeout_s;
  return entry;
}

Watchdog::Guard Watchdog::watch(std::string operation) {
  std::lock_guard lock(mutex_);
  entries_.push_back(entry_now(std::move(operation)));
  return Guard(this, std::prev(entries_.end()));
}

void Watchdog::watch_until(std::string operation, std::function<bool()> done, std::function<std::string()> failed) {
  std::lock_guard lock(mutex_);
  Entry entry = entry_now(std::move(operation));
  entry.done = std::move(done);
  entry.failed = std::move(failed);
  entries_.push_back(std::move(entry));
}

Watchdog::LongWaitScope Watchdog::long_wait(LongWait wait) {
  DSEE_CHECK(wait.timeout_s > 0, "{} must be positive, got {}", wait.setting, wait.timeout_s);
  std::lock_guard lock(mutex_);
  auto outer = std::exchange(long_wait_, std::make_shared<const LongWait>(std::move(wait)));
  return LongWaitScope(this, std::move(outer));
}

Watchdog::LongWaitScope::~LongWaitScope() {
  std::lock_guard lock(owner_->mutex_);
  owner_->long_wait_ = std::move(outer_);
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
  // A tenth of the shortest bound, at most a quarter second: the abort comes
  // within 10% (or 0.25 s) of the limit.
  const auto poll = std::chrono::duration<double>(std::min(0.25, timeout_s_ / 10));
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, poll);
    if (stopping_ || fired_) continue;
    const auto now = Clock::now();
    // Drop the entries that are done; fire on the first one past its bound
    // or failed.
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->done && it->done())
        it = entries_.erase(it);
      else
        ++it;
    }
    for (const Entry& entry : entries_) {
      const double waited = std::chrono::duration<double>(now - entry.start).count();
      const std::string failure = entry.failed ? entry.failed() : std::string();
      if (waited > entry.timeout_s || !failure.empty()) {
        fired_ = true;
        const Entry copy = entry;
        lock.unlock();
        fire(copy, waited, failure);
        lock.lock();
        break;
      }
    }
  }
}

void Watchdog::fire(const Entry& entry, double waited_s, const std::string& failure) {
  int rank = 0;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string where = entry.step < 0 ? "before training" : fmt::format("at step {}", entry.step);
  std::string message;
  if (!failure.empty()) {
    message = fmt::format(
        "watchdog: rank {}: collective '{}' {} failed after {:.1f} s: {}; another rank is dead or "
        "the network broke. Aborting the job",
        rank, entry.operation, where, waited_s, failure);
  } else if (entry.long_wait) {
    const LongWait& wait = *entry.long_wait;
    message = fmt::format(
        "watchdog: rank {}: {} (collective '{}' {}) has not finished after {:.1f} s ({} = {}); {}. "
        "Aborting the job",
        rank, wait.what, entry.operation, where, waited_s, wait.setting, wait.timeout_s, wait.advice);
  } else {
    message = fmt::format(
        "watchdog: rank {}: collective '{}' {} has not finished after {:.1f} s (dist.timeout_s = {}); "
        "another rank is dead, stuck or issued collectives in a different order. Aborting the job",
        rank, entry.operation, where, waited_s, timeout_s_);
  }
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
