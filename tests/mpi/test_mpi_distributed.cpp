// Distributed building blocks on N ranks (mpiexec -n 2 and -n 3), one
// scenario per ctest: `test_mpi_distributed SCENARIO`. Every check compares
// with what one process computes alone (the 1-rank reference).
#include <ATen/ATen.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "base/log.h"
#include "data/distributed_sampler.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"
#include "distributed/coordinator.h"
#include "distributed/fingerprint.h"
#include "distributed/gradient_sync.h"
#include "distributed/stop_signal.h"

namespace {

int failures = 0;
int my_rank = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", my_rank, what.c_str());
    ++failures;
  }
}

// The data of a least-squares problem every rank can build: [rows, 4] inputs,
// [rows, 3] targets, the same on every rank.
std::pair<at::Tensor, at::Tensor> regression_data(std::int64_t rows) {
  at::manual_seed(7);
  return {at::randn({rows, 4}), at::randn({rows, 3})};
}

// Gradients of mean((x W^T + b - y)^2) over rows [begin, end), in
// `micro_steps` accumulation steps (each loss scaled by 1/micro_steps).
std::vector<at::Tensor> gradients(const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& x, const at::Tensor& y,
                                  int micro_steps, dsee::Communicator* comm) {
  at::Tensor w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  const std::int64_t rows = x.size(0) / micro_steps;
  std::optional<dsee::GradientSync> sync;
  if (comm) sync.emplace(*comm, std::vector<at::Tensor>{w, b});
  const auto calls_before = comm ? comm->stats().calls : 0;
  for (int m = 0; m < micro_steps; ++m) {
    const at::Tensor xs = x.narrow(0, m * rows, rows), ys = y.narrow(0, m * rows, rows);
    const at::Tensor loss = (at::matmul(xs, w.t()) + b - ys).pow(2).mean() / micro_steps;
    loss.backward();
  }
  if (comm) {
    expect(comm->stats().calls == calls_before, "no collective on accumulation micro-steps");
    sync->average_gradients();
    expect(comm->stats().calls == calls_before + 1, "exactly one collective per optimizer step");
    expect(sync->bytes_per_step() == (12 + 3) * 4, "bytes per step = 4 x trainable values");
  }
  return {w.grad(), b.grad()};
}

void gradient_sync_equals_one_rank(dsee::Communicator& comm) {
  const int n = comm.world_size(), r = comm.rank();
  const std::int64_t per_rank = 6;  // samples per rank and optimizer step
  auto [x, y] = regression_data(per_rank * n);
  const at::Tensor w0 = at::randn({3, 4}), b0 = at::randn({3});
  // 1 rank, the whole global batch, no communicator.
  const auto reference = gradients(w0, b0, x, y, 1, nullptr);
  // This rank's shard, accumulated over 2 micro-steps, then synced.
  const auto synced =
      gradients(w0, b0, x.narrow(0, r * per_rank, per_rank), y.narrow(0, r * per_rank, per_rank), 2, &comm);
  for (int i = 0; i < 2; ++i)
    expect(at::allclose(synced[i], reference[i], 1e-6, 1e-6),
           "synced gradient " + std::to_string(i) + " equals the 1-rank gradient, max diff " +
               std::to_string((synced[i] - reference[i]).abs().max().item<double>()));
  // A parameter without a gradient on one rank contributes zeros.
  at::Tensor p = at::zeros({2}).requires_grad_(true);
  dsee::GradientSync sync(comm, {p});
  if (r == 0) p.mutable_grad() = at::full({2}, double(n));
  sync.average_gradients();
  expect(p.grad().defined() && at::allclose(p.grad(), at::ones({2})), "missing gradient counts as zeros");
}

void fingerprint_mismatch_is_caught(dsee::Communicator& comm) {
  const int n = comm.world_size(), r = comm.rank();
  // Equal everywhere: no error.
  dsee::fingerprint_verify_text(comm, "resolved config", "[train]\nlr = 0.0002\n");
  // The last rank reads a different learning rate.
  const std::string config = r == n - 1 ? "[train]\nepochs = 5\nlr = 0.0003\n" : "[train]\nepochs = 5\nlr = 0.0002\n";
  try {
    dsee::fingerprint_verify_text(comm, "resolved config", config);
    expect(false, "a different config on rank n-1 throws");
  } catch (const dsee::FingerprintMismatch& error) {
    const std::string text = error.what();
    const std::string ok_ranks = n == 2 ? "rank 0 " : "ranks 0, 1 ";
    expect(text.find("ranks disagree on the resolved config") != std::string::npos, "names the label: " + text);
    expect(text.find(ok_ranks) != std::string::npos, "names the agreeing ranks: " + text);
    expect(text.find("but rank " + std::to_string(n - 1)) != std::string::npos, "names the odd rank: " + text);
    expect(text.find("line 3: rank 0 has \"lr = 0.0002\", rank " + std::to_string(n - 1) + " has \"lr = 0.0003\"") !=
               std::string::npos,
           "quotes the differing line: " + text);
    if (r == 0) std::printf("caught as expected: %s\n", text.c_str());
  }
  // Tensors: one element off on rank 1.
  at::Tensor t = at::arange(10, at::kFloat);
  if (r == 1) t[3] = 3.5;
  try {
    dsee::fingerprint_verify(comm, "trainable parameters at step 100", dsee::fingerprint(t));
    expect(false, "a different tensor on rank 1 throws");
  } catch (const dsee::FingerprintMismatch& error) {
    expect(std::string(error.what()).find("trainable parameters at step 100") != std::string::npos, error.what());
  }
  // Per-tensor state (dsee run's periodic check): equal, then one of three
  // tensors off on the last rank; the message names that tensor.
  const auto state = [&](bool odd) {
    at::Tensor b = at::linspace(0, 1, 5, at::kFloat);
    if (odd) b[2] = 0.75f;
    return dsee::NamedTensors{{"layer.0.A", at::ones({2, 3})}, {"layer.0.B", b}, {"head", at::zeros({4})}};
  };
  dsee::fingerprint_verify_state(comm, "trainable parameters after step 6", state(false));
  const std::string odd_rank = "rank " + std::to_string(n - 1);
  try {
    dsee::fingerprint_verify_state(comm, "trainable parameters after step 9", state(r == n - 1));
    expect(false, "a different tensor on rank n-1 throws");
  } catch (const dsee::FingerprintMismatch& error) {
    const std::string text = error.what();
    expect(text.find("ranks disagree on the trainable parameters after step 9: tensor 'layer.0.B' differs (") !=
               std::string::npos,
           "names the step and the tensor: " + text);
    expect(text.find("but " + odd_rank + " 0x") != std::string::npos, "names the odd rank: " + text);
    expect(text.find("layer.0.A") == std::string::npos && text.find("'head'") == std::string::npos &&
               text.find("collective order") == std::string::npos,
           "names only the differing tensor: " + text);
    if (r == 0) std::printf("caught as expected: %s\n", text.c_str());
  }
  // Collective order: the last rank's all-reduce is of another dtype (same
  // byte count, so MPI completes it); the next state check names it.
  at::Tensor value = r == n - 1 ? at::ones({1}, at::kLong) : at::ones({1}, at::kDouble);
  comm.all_reduce_sum(value);
  try {
    dsee::fingerprint_verify_state(comm, "trainable parameters after step 12", state(false));
    expect(false, "a different collective order on rank n-1 throws");
  } catch (const dsee::FingerprintMismatch& error) {
    const std::string text = error.what();
    expect(text.find("after step 12: collective order differs (") != std::string::npos,
           "names the collective order: " + text);
    expect(text.find("but " + odd_rank + " 0x") != std::string::npos, "names the odd rank: " + text);
    expect(text.find("tensor") == std::string::npos, "no tensor differs: " + text);
    if (r == 0) std::printf("caught as expected: %s\n", text.c_str());
  }
}

void coordinator_broadcasts_rank0_set(dsee::Communicator& comm) {
  const int r = comm.rank();
  // What rank 0 "computes": Ω indices per matrix and a mask. Other ranks hold
  // something else (or nothing) and must end with rank 0's.
  dsee::NamedTensors on_root;
  if (r == 0) {
    on_root = {{"layer.0.attention.query.omega", at::tensor({5, 17, 300, 1023}, at::kLong).reshape({2, 2})},
               {"layer.0.mask", at::arange(12).reshape({3, 4}).remainder(3).eq(0)},
               {"head_scores", at::linspace(0, 1, 7, at::kFloat).to(at::kBFloat16)},
               {"empty", at::empty({0, 5}, at::kFloat)}};
  } else {
    on_root = {{"junk", at::ones({3})}};
  }
  const dsee::NamedTensors got = dsee::broadcast_from_root(comm, on_root, "omega");
  // The reference: what rank 0 had, which every rank can rebuild.
  expect(got.size() == 4, "four tensors arrive");
  if (got.size() == 4) {
    expect(got[0].name == "layer.0.attention.query.omega" && got[3].name == "empty", "names in rank 0's order");
    expect(at::equal(got[0].tensor, at::tensor({5, 17, 300, 1023}, at::kLong).reshape({2, 2})), "omega values");
    expect(got[1].tensor.scalar_type() == at::kBool &&
               at::equal(got[1].tensor, at::arange(12).reshape({3, 4}).remainder(3).eq(0)),
           "mask values and dtype");
    expect(at::equal(got[2].tensor, at::linspace(0, 1, 7, at::kFloat).to(at::kBFloat16)), "bfloat16 values");
    expect(got[3].tensor.sizes() == at::IntArrayRef({0, 5}), "empty tensor shape");
  }
  // Rows gathered in rank order restore the 1-rank order.
  const std::int64_t total = 7;
  const auto [begin, end] = dsee::shard_range(total, r, comm.world_size());
  const at::Tensor all = at::arange(total * 2, at::kFloat).reshape({total, 2});
  const at::Tensor gathered = dsee::all_gather_rows(comm, all.narrow(0, begin, end - begin));
  expect(at::equal(gathered, all), "all_gather_rows restores the 1-rank rows");
}

void stop_request_reaches_every_rank(dsee::Communicator& comm) {
  dsee::install_stop_handlers();
  expect(!dsee::stop_requested_on_any_rank(comm), "no stop before any signal");
  if (comm.rank() == comm.world_size() - 1) std::raise(SIGTERM);
  expect(dsee::stop_requested() == (comm.rank() == comm.world_size() - 1), "only the signalled rank has the flag");
  expect(dsee::stop_requested_on_any_rank(comm), "every rank learns of the stop");
}

}  // namespace

int main(int argc, char** argv) {
  dsee::LogOptions log;
  dsee::log_init(log);
  dsee::MpiSession mpi;
  const std::map<std::string, std::function<void(dsee::Communicator&)>> scenarios{
      {"gradient_sync", gradient_sync_equals_one_rank},
      {"fingerprint", fingerprint_mismatch_is_caught},
      {"coordinator", coordinator_broadcasts_rank0_set},
      {"stop_signal", stop_request_reaches_every_rank},
  };
  const auto scenario = argc == 2 ? scenarios.find(argv[1]) : scenarios.end();
  if (scenario == scenarios.end()) {
    std::fprintf(stderr, "usage: test_mpi_distributed gradient_sync|fingerprint|coordinator|stop_signal\n");
    return 2;
  }
  auto comm = dsee::make_communicator({.backend = "mpi", .timeout_s = 60});
  my_rank = comm->rank();
  expect(comm->world_size() >= 2, "run under mpiexec with at least 2 ranks");
  scenario->second(*comm);
  at::Tensor total = at::full({1}, int64_t{failures}, at::kLong);
  comm->all_reduce_sum(total);
  if (my_rank == 0)
    std::printf("%s on %d ranks: %s\n", argv[1], comm->world_size(), total.item<int64_t>() == 0 ? "passed" : "FAILED");
  return total.item<int64_t>() == 0 ? 0 : 1;
}
