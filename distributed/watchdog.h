// The watchdog: no collective may wait longer than its bound —
// dist.timeout_s, or a longer one for a known long wait (LongWait: the ranks
// waiting while rank 0 alone computes Ω or writes files, dist.root_timeout_s).
//
// Every collective a communicator issues is registered here with its
// operation name, the training step, its start time and its bound. A thread
// wakes a few times a second; when an unfinished collective is older than
// its bound, or its backend reports that it failed (NCCL's asynchronous
// error), it logs rank, step and operation, runs the abort hooks (the NCCL
// backend's ncclCommAbort), and calls MPI_Abort, which ends every rank of
// the job with exit code kWatchdogExitCode. See Note [dead ranks] in
// watchdog.cpp for what a rank killed with SIGKILL does to the others.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dsee {

// The exit code of a job the watchdog ended (1 and 2 are user and usage
// errors; see docs/command-line.md).
inline constexpr int kWatchdogExitCode = 3;

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // `timeout_s` > 0. `on_timeout` replaces the abort (tests only); it is
  // called once from the watchdog thread with the log message.
  explicit Watchdog(double timeout_s, std::function<void(const std::string&)> on_timeout = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  double timeout_s() const { return timeout_s_; }
  // The training step the following collectives belong to (-1: before training).
  void set_step(std::int64_t step) { step_.store(step); }
  std::int64_t step() const { return step_.load(); }

  // A wait known to be long: the collectives registered while a LongWaitScope
  // lives are bounded by `timeout_s` instead of timeout_s(), and a timeout
  // names `what` is awaited, the `setting` that bounds it and `advice`.
  struct LongWait {
    std::string what;     // "waiting for rank 0: computing Ω"
    double timeout_s;     // > 0
    std::string setting;  // "dist.root_timeout_s"
    std::string advice;   // what to do when it fires
  };
  class LongWaitScope;
  [[nodiscard]] LongWaitScope long_wait(LongWait wait);

  // Runs before MPI_Abort when a collective times out (from the watchdog
  // thread): backends release what MPI_Abort cannot, e.g. ncclCommAbort.
  void add_abort_hook(std::function<void()> hook);

  class Guard;
  // A collective that finishes when the returned guard is destroyed (MPI:
  // the call returns when the operation is complete).
  Guard watch(std::string operation);
  // A collective that finishes when `done()` turns true (NCCL: the event
  // recorded after the kernel). While it is not done, `failed()` (may be
  // empty) returns why it never will (NCCL's asynchronous error), or an
  // empty string; a failure ends the job at once, naming the reason. Both are
  // polled from the watchdog thread, so they must be thread-safe and cheap.
  void watch_until(std::string operation, std::function<bool()> done, std::function<std::string()> failed = {});

  // Collectives registered and not yet finished (tests).
  std::size_t pending() const;

 private:
  struct Entry {
    std::string operation;
    std::int64_t step;
    Clock::time_point start;
    double timeout_s;
    std::shared_ptr<const LongWait> long_wait;  // null: an ordinary collective
    std::function<bool()> done;                 // empty: finished when the guard goes
    std::function<std::string()> failed;        // may be empty
  };
  Entry entry_now(std::string operation);  // under mutex_
  void run();
  void fire(const Entry& entry, double waited_s, const std::string& failure);

  double timeout_s_;
  std::function<void(const std::string&)> on_timeout_;
  std::atomic<std::int64_t> step_{-1};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::list<Entry> entries_;
  std::vector<std::function<void()>> abort_hooks_;
  std::shared_ptr<const LongWait> long_wait_;  // the innermost live LongWaitScope's
  bool stopping_ = false;
  bool fired_ = false;
  std::thread thread_;
};

class Watchdog::Guard {
 public:
  Guard(Guard&& other) noexcept : owner_(other.owner_), entry_(other.entry_) { other.owner_ = nullptr; }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  Guard& operator=(Guard&&) = delete;
  ~Guard();

 private:
  friend class Watchdog;
  Guard(Watchdog* owner, std::list<Entry>::iterator entry) : owner_(owner), entry_(entry) {}
  Watchdog* owner_;
  std::list<Entry>::iterator entry_;
};

class Watchdog::LongWaitScope {
 public:
  LongWaitScope(const LongWaitScope&) = delete;
  LongWaitScope& operator=(const LongWaitScope&) = delete;
  ~LongWaitScope();

 private:
  friend class Watchdog;
  LongWaitScope(Watchdog* owner, std::shared_ptr<const LongWait> outer) : owner_(owner), outer_(std::move(outer)) {}
  Watchdog* owner_;
  std::shared_ptr<const LongWait> outer_;  // restored when this scope ends
};

}  // namespace dsee
