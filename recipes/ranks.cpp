// The pipeline's rank plumbing: see ranks.h.
#include "recipes/ranks.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "base/env_vars.h"
#include "data/distributed_sampler.h"
#include "distributed/coordinator.h"

namespace dsee {

// Rank 0's text on every rank (a collective); one process: `text` itself.
std::string text_broadcast(const PipelineRanks& ranks, const std::string& text) {
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
// the root_does work named WHAT.
void test_slow_root(const std::string& what) {
  const char* text = std::getenv(env_vars::test_slow_root);
  if (text == nullptr) return;
  const std::string spec = text;
  const auto eq = spec.rfind('=');
  if (eq == std::string::npos || spec.substr(0, eq) != what) return;
  const double seconds = std::atof(spec.c_str() + eq + 1);
  spdlog::warn("{}: rank 0 sleeps {} s before {}", env_vars::test_slow_root, seconds, what);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

}  // namespace

// Runs `action` on rank 0 only and returns its text on every rank. A
// collective, hence a barrier: no rank goes on before rank 0 has finished.
// The others' wait for rank 0's outcome is a long wait (Note [long waits] in
// distributed/watchdog.cpp), bounded by ranks.root_timeout_s. When rank 0
// fails, every rank throws ErrorOnEveryRank with rank 0's message.
std::string root_does(const PipelineRanks& ranks, const std::string& what, const std::function<std::string()>& action) {
  if (ranks.comm == nullptr) return action();
  std::string status = "ok", text;
  if (ranks.root()) {
    test_slow_root(what);
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

void root_writes(const PipelineRanks& ranks, const std::string& what, const std::function<void()>& write) {
  root_does(ranks, what, [&] {
    write();
    return std::string();
  });
}

// Ω as named tensors, for broadcast_from_root: per matrix its indices and
// [rows, cols, sparse_nonzeros].
NamedTensors omega_to_named(const std::vector<OmegaEntry>& omega) {
  NamedTensors out;
  for (const auto& e : omega) {
    out.emplace_back(e.name + "#indices", e.indices.contiguous());
    out.emplace_back(e.name + "#shape", at::tensor(std::vector<std::int64_t>{e.rows, e.cols, e.sparse_nonzeros}));
  }
  return out;
}

std::vector<OmegaEntry> omega_from_named(const NamedTensors& named) {
  std::vector<OmegaEntry> out;
  for (std::size_t i = 0; i + 1 < named.size(); i += 2) {
    OmegaEntry e;
    e.name = named[i].name.substr(0, named[i].name.rfind('#'));
    e.indices = named[i].tensor.cpu().contiguous();
    const auto shape = named[i + 1].tensor.cpu();
    e.rows = shape[0].item<std::int64_t>();
    e.cols = shape[1].item<std::int64_t>();
    e.sparse_nonzeros = shape[2].item<std::int64_t>();
    out.push_back(std::move(e));
  }
  return out;
}

// A pruning plan as named tensors: "mask:<module>" [out, in] and "heads:<layer>" [k] int64.
NamedTensors prune_plan_to_named(const PrunePlan& plan) {
  NamedTensors out;
  for (const auto& m : plan.masks) out.emplace_back("mask:" + m.module, m.mask.contiguous());
  for (const auto& [layer, heads] : plan.heads) out.emplace_back(fmt::format("heads:{}", layer), at::tensor(heads));
  return out;
}

PrunePlan prune_plan_from_named(const NamedTensors& named) {
  PrunePlan plan;
  for (const auto& [name, tensor] : named) {
    if (name.starts_with("mask:")) {
      plan.masks.push_back({name.substr(5), tensor.cpu()});
    } else {
      DSEE_ASSERT(name.starts_with("heads:"), "unexpected pruning-plan tensor '{}'", name);
      const auto ids = tensor.cpu().contiguous();
      plan.heads[std::stoll(name.substr(6))] =
          std::vector<std::int64_t>(ids.data_ptr<std::int64_t>(), ids.data_ptr<std::int64_t>() + ids.numel());
    }
  }
  return plan;
}

std::vector<OmegaEntry> omega_select_across_ranks(const PipelineRanks& ranks, const std::vector<NamedMatrix>& matrices,
                                                  OmegaOptions options) {
  if (ranks.comm == nullptr || ranks.world_size == 1) return omega_select(matrices, options);
  auto& comm = *ranks.comm;
  const auto [begin, end] = shard_range(static_cast<std::int64_t>(matrices.size()), ranks.rank, ranks.world_size);
  options.first = static_cast<std::size_t>(begin);
  options.count = static_cast<std::size_t>(end - begin);
  if (ranks.root())
    spdlog::info("Ω: {} matrices split across {} ranks ({} on rank 0)", matrices.size(), ranks.world_size, end - begin);
  const std::vector<OmegaEntry> mine = omega_select(matrices, options);
  // One row per matrix: rows, cols, sparse_nonzeros, then the c indices.
  at::Tensor packed = at::empty({static_cast<std::int64_t>(mine.size()), 3 + options.c}, at::kLong);
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const auto row = packed[static_cast<std::int64_t>(i)];
    row[0] = mine[i].rows;
    row[1] = mine[i].cols;
    row[2] = mine[i].sparse_nonzeros;
    row.narrow(0, 3, options.c).copy_(mine[i].indices.to(at::kCPU));
  }
  const at::Tensor all = all_gather_rows(comm, packed.to(comm.device())).cpu();
  DSEE_ASSERT(all.size(0) == static_cast<std::int64_t>(matrices.size()), "Ω across ranks: {} entries for {} matrices",
              all.size(0), matrices.size());
  std::vector<OmegaEntry> out(matrices.size());
  for (std::size_t i = 0; i < matrices.size(); ++i) {
    const auto row = all[static_cast<std::int64_t>(i)];
    out[i].name = matrices[i].name;
    out[i].rows = row[0].item<std::int64_t>();
    out[i].cols = row[1].item<std::int64_t>();
    out[i].sparse_nonzeros = row[2].item<std::int64_t>();
    out[i].indices = row.narrow(0, 3, options.c).clone();
  }
  return out;
}

// Rank 0's value of `on_root` on every rank (checked by fingerprint).
NamedTensors from_root(const PipelineRanks& ranks, const NamedTensors& on_root, const std::string& label) {
  if (ranks.comm == nullptr) return on_root;
  return broadcast_from_root(*ranks.comm, on_root, label);
}

// Resume under data parallelism (Note [Resuming a training stage]): rank 0
// read the checkpoint into `state`; every other rank receives the parts a
// resume uses (trainable tensors, AdamW state, the trainer's progress, the
// CPU generator's state) by broadcast. One rank: nothing to do.
void checkpoint_state_from_root(const PipelineRanks& ranks, CheckpointState& state) {
  if (ranks.comm == nullptr) return;
  NamedTensors named;
  std::string keys;
  if (ranks.root()) {
    for (const auto& [name, tensor] : state.trainable) named.emplace_back("trainable:" + name, tensor);
    for (const auto& [name, tensor] : state.optimizer) named.emplace_back("optimizer:" + name, tensor);
    for (const auto& [name, tensor] : state.best) named.emplace_back("best:" + name, tensor);
    std::vector<double> values;
    for (const auto& [key, value] : state.scheduler) {
      keys += key + "\n";
      values.push_back(value);
    }
    named.emplace_back("scheduler", at::tensor(values, at::kDouble));
    named.emplace_back("position", at::tensor(std::vector<std::int64_t>{state.step, state.epoch, state.sample_index,
                                                                        state.optimizer_step},
                                              at::kLong));
    if (state.rng_cpu.defined()) named.emplace_back("rng_cpu", state.rng_cpu);
    for (std::size_t i = 0; i < state.rng_cuda.size(); ++i)
      named.emplace_back(fmt::format("rng_cuda:{}", i), state.rng_cuda[i]);
  }
  keys = text_broadcast(ranks, keys);
  const NamedTensors got = from_root(ranks, named, "checkpoint state read by rank 0");
  if (ranks.root()) return;
  state = CheckpointState();
  for (const auto& [name, tensor] : got) {
    const auto cpu = tensor.cpu();
    if (name.starts_with("trainable:")) {
      state.trainable.push_back({name.substr(10), cpu});
    } else if (name.starts_with("optimizer:")) {
      state.optimizer.push_back({name.substr(10), cpu});
    } else if (name.starts_with("best:")) {
      state.best.push_back({name.substr(5), cpu});
    } else if (name == "scheduler") {
      std::istringstream lines(keys);
      std::string key;
      for (std::int64_t i = 0; std::getline(lines, key); ++i) state.scheduler[key] = cpu[i].item<double>();
    } else if (name == "position") {
      state.step = cpu[0].item<std::int64_t>();
      state.epoch = cpu[1].item<std::int64_t>();
      state.sample_index = cpu[2].item<std::int64_t>();
      state.optimizer_step = cpu[3].item<std::int64_t>();
    } else if (name == "rng_cpu") {
      state.rng_cpu = cpu;
    } else if (name.starts_with("rng_cuda:")) {
      state.rng_cuda.push_back(cpu);  // in device order
    }
  }
}

}  // namespace dsee
