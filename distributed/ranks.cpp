// The rank plumbing around rank 0: see ranks.h.
#include "distributed/ranks.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "base/env_vars.h"
#include "distributed/fingerprint.h"

namespace dsee {

namespace fs = std::filesystem;

// Rank 0's text on every rank (a collective); one process: `text` itself.
std::string text_broadcast(const Ranks& ranks, const std::string& text) {
  if (ranks.comm == nullptr) return text;
  auto& comm = *ranks.comm;
  at::Tensor length = at::full({1}, static_cast<std::int64_t>(text.size()), at::kLong).to(comm.device());
  comm.broadcast(length, 0);
  const auto size = length.cpu().item<std::int64_t>();
  if (size == 0) return {};
  at::Tensor bytes = at::empty({size}, at::kByte);
  if (ranks.root()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  bytes = bytes.to(comm.device());
  comm.broadcast(bytes, 0);
  bytes = bytes.cpu();
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<std::size_t>(size));
}

namespace {

// DSEE_TEST_SLOW_ROOT = "WHAT=SECONDS" (tests only): rank 0 sleeps before
// the root_does work named WHAT. Read once.
struct SlowRoot {
  std::string what;
  double seconds = 0;
};

const SlowRoot& test_slow_root() {
  static const SlowRoot slow = [] {
    const char* text = std::getenv(env_vars::test_slow_root);
    if (text == nullptr) return SlowRoot{};
    const std::string spec = text;
    const auto eq = spec.rfind('=');
    if (eq == std::string::npos) return SlowRoot{};
    return SlowRoot{spec.substr(0, eq), std::atof(spec.c_str() + eq + 1)};
  }();
  return slow;
}

void test_slow_root_sleep(const std::string& what) {
  const SlowRoot& slow = test_slow_root();
  if (slow.what.empty() || slow.what != what) return;
  spdlog::warn("{}: rank 0 sleeps {} s before {}", env_vars::test_slow_root, slow.seconds, what);
  std::this_thread::sleep_for(std::chrono::duration<double>(slow.seconds));
}

// FNV-1a over the file's bytes (distributed/fingerprint.h).
std::uint64_t file_fingerprint(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  DSEE_CHECK(in.good(), "cannot read '{}' to compare it across the ranks", path.string());
  std::uint64_t value = kFingerprintSeed;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    value = fingerprint_bytes(buffer.data(), static_cast<std::size_t>(in.gcount()), value);
  }
  return value;
}

}  // namespace

// Runs `action` on rank 0 only and returns its text on every rank. A
// collective, hence a barrier: no rank goes on before rank 0 has finished.
// The others' wait for rank 0's outcome is a long wait (Note [long waits] in
// distributed/watchdog.cpp), bounded by ranks.root_timeout_s. When rank 0
// fails, every rank throws ErrorOnEveryRank with rank 0's message.
std::string root_does(const Ranks& ranks, const std::string& what, const std::function<std::string()>& action) {
  if (ranks.comm == nullptr) return action();
  std::string status = "ok", text;
  if (ranks.root()) {
    test_slow_root_sleep(what);
    try {
      text = action();
    } catch (const Error& e) {
      status = std::string("error") + e.what();
    }
  }
  if (!ranks.root() && ranks.watchdog != nullptr) {
    const auto wait = ranks.watchdog->long_wait(
        {.what = "waiting for rank 0: " + what,
         .timeout_s = ranks.root_timeout_s,
         .setting = "dist.root_timeout_s",
         .advice = "rank 0 is still at it, stuck or dead; if its work may take this long, raise "
                   "dist.root_timeout_s (for Ω, omega.split_across_ranks = true shares the work among the ranks)"});
    status = text_broadcast(ranks, status);
  } else {
    status = text_broadcast(ranks, status);
  }
  if (status != "ok") {
    const std::string message = status.substr(5);
    if (ranks.root()) throw ErrorOnEveryRank(message);
    throw ErrorOnEveryRank(fmt::format("rank 0 failed: {}", message));
  }
  return text_broadcast(ranks, text);
}

void root_writes(const Ranks& ranks, const std::string& what, const std::function<void()>& write) {
  root_does(ranks, what, [&] {
    write();
    return std::string();
  });
}

void read_on_every_rank(const Ranks& ranks, const fs::path& path, const std::string& what,
                        const std::function<void()>& read) {
  root_writes(ranks, what, read);
  if (ranks.comm == nullptr) return;
  if (!ranks.root()) read();
  file_verify_across_ranks(ranks, path);
}

void file_verify_across_ranks(const Ranks& ranks, const fs::path& path) {
  if (ranks.comm == nullptr) return;
  fingerprint_verify(*ranks.comm, fmt::format("bytes of '{}'", path.string()), file_fingerprint(path));
}

}  // namespace dsee
