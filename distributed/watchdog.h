// The watchdog: no collective may wait longer than dist.timeout_s.
//
// Every collective a communicator issues is registered here with its
// operation name, the training step and its start time. A thread wakes a few
// times a second; when the oldest unfinished collective is older than the
// timeout it logs rank, step and operation, runs the abort hooks (the NCCL
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
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dsee {

// The exit code of a job the watchdog ended (1 and 2 are user and usage
// errors; see README.md).
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
  void set_step(std::int64_t step) { step_.store(step); }
  std::int64_t step() const { return step_.load(); }

  // Runs before MPI_Abort when a collective times out (from the watchdog
  // thread): backends release what MPI_Abort cannot, e.g. ncclCommAbort.
  void add_abort_hook(std::function<void()> hook);

  class Guard;
  // A collective that finishes when the returned guard is destroyed (MPI:
  // the call returns when the operation is complete).
  Guard watch(std::string operation);
  // A collective that finishes when `done()` turns true (NCCL: the event
  // recorded after the kernel); polled from the watchdog thread, so it must
  // be thread-safe and cheap.
  void watch_until(std::string operation, std::function<bool()> done);

  // Collectives registered and not yet finished (tests).
  std::size_t pending() const;

 private:
  struct Entry {
    std::string operation;
    std::int64_t step;
    Clock::time_point start;
    std::function<bool()> done;  // empty: finished when the guard goes
  };
  void run();
  void fire(const Entry& entry, double waited_s);

  double timeout_s_;
  std::function<void(const std::string&)> on_timeout_;
  std::atomic<std::int64_t> step_{-1};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::list<Entry> entries_;
  std::vector<std::function<void()>> abort_hooks_;
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

}  // namespace dsee
