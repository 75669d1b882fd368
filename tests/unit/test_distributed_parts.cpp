// One-process checks of the distributed pieces: fingerprints, the watchdog,
// the stop signal, the backend choice and GradientSync's flat buffer.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <functional>
#include <string>
#include <thread>
#include <tuple>

#include "distributed/communicator_factory.h"
#include "distributed/fingerprint.h"
#include "distributed/gradient_sync.h"
#include "distributed/stop_signal.h"
#include "distributed/watchdog.h"

namespace {

TEST(Fingerprint, IsFnv1a64) {
  // Reference values of 64-bit FNV-1a (Fowler, Noll, Vo).
  EXPECT_EQ(dsee::fingerprint(std::string("")), 0xcbf29ce484222325ULL);
  EXPECT_EQ(dsee::fingerprint(std::string("a")), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(dsee::fingerprint(std::string("foobar")), 0x85944171f73967e8ULL);
}

TEST(Fingerprint, TensorsDifferByValueShapeAndDtype) {
  const at::Tensor t = at::arange(6, at::kFloat);
  EXPECT_EQ(dsee::fingerprint(t), dsee::fingerprint(at::arange(6, at::kFloat)));
  EXPECT_EQ(dsee::fingerprint(t.reshape({2, 3}).t()), dsee::fingerprint(t.reshape({2, 3}).t().contiguous()));
  EXPECT_NE(dsee::fingerprint(t), dsee::fingerprint(t.reshape({2, 3})));
  EXPECT_NE(dsee::fingerprint(t), dsee::fingerprint(at::arange(6, at::kInt)));
  at::Tensor u = t.clone();
  u[5] = 5.0001f;
  EXPECT_NE(dsee::fingerprint(t), dsee::fingerprint(u));
  EXPECT_NE(dsee::fingerprint(dsee::NamedTensors{{"a", t}, {"b", u}}),
            dsee::fingerprint(dsee::NamedTensors{{"b", t}, {"a", u}}));
}

TEST(Fingerprint, CollectiveSequenceSeesOperationDtypeCountRootAndOrder) {
  const at::Tensor f = at::zeros({4}), i = at::zeros({4}, at::kInt);
  const auto after = [](std::vector<std::tuple<const char*, at::Tensor, int>> calls) {
    std::uint64_t sequence = 0;
    for (const auto& [operation, tensor, root] : calls)
      sequence = dsee::fingerprint_collective(sequence, operation, tensor, root);
    return sequence;
  };
  const auto reference = after({{"all_reduce", f, -1}, {"broadcast", f, 0}});
  EXPECT_EQ(reference, after({{"all_reduce", f.clone(), -1}, {"broadcast", f + 1, 0}}));   // values do not count
  EXPECT_NE(reference, after({{"broadcast", f, 0}, {"all_reduce", f, -1}}));               // order
  EXPECT_NE(reference, after({{"all_reduce", i, -1}, {"broadcast", f, 0}}));               // dtype
  EXPECT_NE(reference, after({{"all_reduce", at::zeros({5}), -1}, {"broadcast", f, 0}}));  // count
  EXPECT_NE(reference, after({{"all_reduce", f, -1}, {"broadcast", f, 1}}));               // root
}

// A communicator of one rank: every collective leaves its tensor as it is;
// all_reduce calls remember the storage they were given.
class OneRank final : public dsee::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "one rank"; }
  at::Device device() const override { return at::kCPU; }
  void all_reduce_sum(at::Tensor& tensor) override { reduced(tensor); }
  void all_reduce_average(at::Tensor& tensor) override { reduced(tensor); }
  void broadcast(at::Tensor&, int) override { ++stats_.calls; }
  at::Tensor all_gather(const at::Tensor& tensor) override {
    ++stats_.calls;
    return tensor.unsqueeze(0).clone();
  }
  void barrier() override { ++stats_.calls; }
  void set_step(std::int64_t) override {}
  dsee::CollectiveStats stats() const override { return stats_; }
  std::vector<std::pair<const void*, std::int64_t>> all_reduced;  // data pointer and numel of each all-reduce

 private:
  void reduced(const at::Tensor& tensor) {
    ++stats_.calls;
    all_reduced.emplace_back(tensor.data_ptr(), tensor.numel());
  }
  dsee::CollectiveStats stats_;
};

// gradient_sync.h: one flat fp32 buffer allocated once; each step copies the
// gradients in, all-reduces the whole buffer once and copies the averages
// back into the same gradient tensors.
TEST(GradientSync, OneBufferAllocatedOnceOneAllReducePerStep) {
  OneRank comm;
  at::Tensor w = at::zeros({3, 4}).requires_grad_(true), b = at::zeros({3}).requires_grad_(true);
  at::Tensor h = at::zeros({2}, at::kBFloat16).requires_grad_(true);  // a bf16 gradient, copied in and out
  at::Tensor unused = at::zeros({5}).requires_grad_(true);            // no gradient on this rank
  dsee::GradientSync sync(comm, {w, b, h, unused});
  ASSERT_EQ(sync.numel(), 12 + 3 + 2 + 5);
  const void* buffer = sync.buffer().data_ptr();
  std::vector<const void*> gradients;
  for (int step = 1; step <= 4; ++step) {
    const auto calls = comm.stats().calls;
    // This step's gradients, written into the gradient tensors the previous step left.
    const auto set_grad = [](at::Tensor& p, const at::Tensor& value) {
      if (p.grad().defined())
        p.mutable_grad().copy_(value);
      else
        p.mutable_grad() = value.clone();
    };
    set_grad(w, at::arange(12, at::kFloat).reshape({3, 4}) * step);
    set_grad(b, at::full({3}, -1.5 * step));
    set_grad(h, at::full({2}, step * 0.5, at::kBFloat16));
    sync.average_gradients();
    EXPECT_EQ(comm.stats().calls, calls + 1) << "step " << step << ": one collective per optimizer step";
    ASSERT_EQ(comm.all_reduced.size(), static_cast<std::size_t>(step));
    EXPECT_EQ(comm.all_reduced.back(), std::make_pair(buffer, sync.numel()))
        << "step " << step << ": the all-reduce gets the whole buffer allocated at construction";
    EXPECT_EQ(sync.buffer().data_ptr(), buffer) << "step " << step << ": the buffer was reallocated";
    // The buffer holds the gradients parameter after parameter; a missing one is zeros.
    const at::Tensor expected = at::cat({w.grad().reshape({-1}), b.grad(), h.grad().to(at::kFloat), at::zeros({5})});
    EXPECT_TRUE(at::equal(sync.buffer(), expected)) << "step " << step;
    ASSERT_TRUE(unused.grad().defined()) << "a missing gradient receives the average";
    EXPECT_TRUE(at::equal(unused.grad(), at::zeros({5})));
    // Averages go back into the same gradient tensors, step after step.
    const std::vector<const void*> now = {w.grad().data_ptr(), b.grad().data_ptr(), h.grad().data_ptr(),
                                          unused.grad().data_ptr()};
    if (step > 1) {
      EXPECT_EQ(now, gradients) << "step " << step << ": gradients were rebound";
    }
    gradients = now;
    for (const auto& p : {w, b, h, unused}) EXPECT_FALSE(p.grad().data_ptr() == buffer) << "copies, not views";
  }
}

// What a watchdog's timeout callback saw: how often it fired, the last message.
struct Fired {
  std::atomic<int> count{0};
  std::string message;
  std::function<void(const std::string&)> callback() {
    return [this](const std::string& text) {
      message = text;
      ++count;
    };
  }
};

TEST(Watchdog, FiresOnceNamingOperationAndStep) {
  Fired fired;
  dsee::Watchdog watchdog(0.2, fired.callback());
  watchdog.set_step(41);
  {
    auto guard = watchdog.watch("all_reduce");
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
  }
  EXPECT_EQ(fired.count.load(), 1);
  EXPECT_NE(fired.message.find("collective 'all_reduce' at step 41 has not finished"), std::string::npos)
      << fired.message;
  EXPECT_NE(fired.message.find("dist.timeout_s = 0.2"), std::string::npos) << fired.message;
}

TEST(Watchdog, SaysBeforeTrainingWhenNoStepIsSet) {
  Fired fired;
  dsee::Watchdog watchdog(0.2, fired.callback());
  {
    auto guard = watchdog.watch("broadcast");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  EXPECT_NE(fired.message.find("collective 'broadcast' before training has not finished"), std::string::npos)
      << fired.message;
}

// The other ranks' wait for rank 0's own work (root_does) has its own bound
// and names what it waits for; ordinary collectives keep dist.timeout_s.
TEST(Watchdog, LongWaitHasItsOwnBoundAndSaysWhatItWaitsFor) {
  Fired fired;
  dsee::Watchdog watchdog(0.2, fired.callback());
  const dsee::Watchdog::LongWait wait{"waiting for rank 0: computing Ω", 1.2, "dist.root_timeout_s",
                                      "raise dist.root_timeout_s"};
  {
    const auto scope = watchdog.long_wait(wait);
    auto guard = watchdog.watch("broadcast");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // 3x dist.timeout_s, half the long bound
  }
  EXPECT_EQ(fired.count.load(), 0);
  const auto start = std::chrono::steady_clock::now();
  {
    const auto scope = watchdog.long_wait(wait);
    auto guard = watchdog.watch("broadcast");
    while (fired.count.load() == 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(5))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(fired.count.load(), 1);
  EXPECT_GE(waited, 1.2);
  EXPECT_LT(waited, 1.2 + 0.5);  // the bound plus a poll
  EXPECT_NE(
      fired.message.find("waiting for rank 0: computing Ω (collective 'broadcast' before training) has not finished "
                         "after 1."),
      std::string::npos)
      << fired.message;
  EXPECT_NE(fired.message.find("(dist.root_timeout_s = 1.2); raise dist.root_timeout_s"), std::string::npos)
      << fired.message;
}

TEST(Watchdog, OrdinaryBoundReturnsAfterALongWait) {
  Fired fired;
  dsee::Watchdog watchdog(0.2, fired.callback());
  {
    const auto scope = watchdog.long_wait({"waiting for rank 0: writing a checkpoint", 30, "dist.root_timeout_s", ""});
  }
  {
    auto guard = watchdog.watch("all_reduce");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  EXPECT_EQ(fired.count.load(), 1);
  EXPECT_NE(fired.message.find("(dist.timeout_s = 0.2)"), std::string::npos) << fired.message;
}

// NCCL's asynchronous error: the job ends at the next poll, not after the bound.
TEST(Watchdog, FailedCollectiveFiresAtOnceWithTheReason) {
  Fired fired;
  dsee::Watchdog watchdog(30, fired.callback());
  watchdog.set_step(9);
  std::atomic<bool> broken{false};
  watchdog.watch_until(
      "all_reduce", [] { return false; },
      [&] { return broken ? std::string("NCCL reports remote process exited or there was a network error") : ""; });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(fired.count.load(), 0);
  broken = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(fired.count.load(), 1);
  EXPECT_NE(fired.message.find("collective 'all_reduce' at step 9 failed after 0."), std::string::npos)
      << fired.message;
  EXPECT_NE(fired.message.find("NCCL reports remote process exited"), std::string::npos) << fired.message;
}

TEST(Watchdog, QuietWhenCollectivesFinishInTime) {
  std::atomic<int> fired{0};
  dsee::Watchdog watchdog(0.3, [&](const std::string&) { ++fired; });
  for (int i = 0; i < 5; ++i) {
    auto guard = watchdog.watch("broadcast");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::atomic<bool> done{false};
  watchdog.watch_until("all_gather", [&] { return done.load(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  done = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(fired.load(), 0);
  EXPECT_EQ(watchdog.pending(), 0u);
}

TEST(Watchdog, FiresWhenAnEnqueuedCollectiveNeverCompletes) {
  std::atomic<int> fired{0};
  dsee::Watchdog watchdog(0.2, [&](const std::string&) { ++fired; });
  watchdog.watch_until("all_reduce_average", [] { return false; });
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(fired.load(), 1);
}

TEST(CommunicatorBackend, ChosenByDeviceAndOverridable) {
  dsee::CommunicatorOptions options;
  EXPECT_EQ(dsee::communicator_backend(options), "mpi");
  options.device = at::Device(at::kCUDA, 0);
  if (dsee::nccl_available())
    EXPECT_EQ(dsee::communicator_backend(options), "nccl");
  else
    EXPECT_THROW(dsee::communicator_backend(options), dsee::Error);
  options.backend = "mpi";
  EXPECT_EQ(dsee::communicator_backend(options), "mpi");
  options = {};
  options.backend = "nccl";
  EXPECT_THROW(dsee::communicator_backend(options), dsee::Error);  // nccl on the CPU
  options.backend = "gloo";
  EXPECT_THROW(dsee::communicator_backend(options), dsee::Error);
}

TEST(StopSignal, FirstSignalSetsTheFlagSecondTerminates) {
  EXPECT_EXIT(
      {
        dsee::install_stop_handlers();
        if (dsee::stop_requested()) std::_Exit(10);
        std::raise(SIGTERM);
        if (!dsee::stop_requested() || dsee::stop_signal() != SIGTERM) std::_Exit(11);
        std::raise(SIGTERM);  // the second one ends the process
        std::_Exit(12);
      },
      testing::KilledBySignal(SIGTERM), "");
}

TEST(StopSignal, DecidedStopIgnoresLaterSignals) {
  EXPECT_EXIT(
      {
        dsee::install_stop_handlers();
        std::raise(SIGUSR1);
        dsee::stop_signals_ignore();
        std::raise(SIGTERM);  // srun --kill-on-bad-exit's, after another rank exited 138
        std::raise(SIGUSR1);
        std::_Exit(dsee::stop_signal() == SIGUSR1 ? 138 : 1);
      },
      testing::ExitedWithCode(138), "");
}

}  // namespace
