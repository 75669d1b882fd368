// Collectives of the MPI communicator on N ranks (run under mpiexec -n 2 and
// -n 3): each rank contributes a tensor that depends on its rank, and every
// rank checks the result against the sum it can compute by itself.
#include <ATen/ATen.h>

#include <cstdio>

#include "base/log.h"
#include "distributed/bootstrap.h"
#include "distributed/fingerprint.h"
#include "distributed/mpi_communicator.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, int rank) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what);
    ++failures;
  }
}

}  // namespace

int main() {
  dsee::LogOptions log;
  dsee::log_init(log);
  dsee::MpiSession mpi;
  dsee::MpiCommunicator comm;
  const int rank = comm.rank(), n = comm.world_size();
  expect(n >= 2, "run under mpiexec with at least 2 ranks", rank);

  // all-reduce sum: rank r holds (r + 1) * [0, 1, ..., 9]
  at::Tensor x = at::arange(10, at::kFloat) * float(rank + 1);
  comm.all_reduce_sum(x);
  const float factor = float(n * (n + 1) / 2);
  expect(at::equal(x, at::arange(10, at::kFloat) * factor), "all_reduce_sum float32", rank);

  at::Tensor counts = at::full({3}, int64_t{rank}, at::kLong);
  comm.all_reduce_sum(counts);
  expect(at::equal(counts, at::full({3}, int64_t{n * (n - 1) / 2}, at::kLong)), "all_reduce_sum int64", rank);

  // average: mean of the ranks' values
  at::Tensor y = at::full({4, 2}, double(rank), at::kDouble);
  comm.all_reduce_average(y);
  expect(at::allclose(y, at::full({4, 2}, (n - 1) / 2.0, at::kDouble)), "all_reduce_average", rank);

  // broadcast from the last rank
  at::Tensor b = rank == n - 1 ? at::arange(6, at::kFloat).reshape({2, 3}) : at::zeros({2, 3});
  comm.broadcast(b, n - 1);
  expect(at::equal(b, at::arange(6, at::kFloat).reshape({2, 3})), "broadcast", rank);

  // all-gather: row r is rank r's tensor
  at::Tensor g = comm.all_gather(at::full({2}, int64_t{rank * 10}, at::kLong));
  expect(g.sizes() == at::IntArrayRef({n, 2}), "all_gather shape", rank);
  for (int r = 0; r < n; ++r) expect(g[r].eq(r * 10).all().item<bool>(), "all_gather values", rank);

  // 16-bit floats are summed by our own MPI operations: small integers are
  // exact in float16 and bfloat16, so the result equals the float32 sum.
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    at::Tensor h = (at::arange(8, at::kFloat) * float(rank + 1)).to(dtype);
    comm.all_reduce_sum(h);
    expect(h.scalar_type() == dtype && at::equal(h.to(at::kFloat), at::arange(8, at::kFloat) * factor),
           "all_reduce_sum float16/bfloat16", rank);
    at::Tensor a = at::full({3}, double(rank), at::kFloat).to(dtype);
    comm.all_reduce_average(a);
    expect(at::allclose(a.to(at::kFloat), at::full({3}, (n - 1) / 2.0, at::kFloat)), "average float16/bfloat16", rank);
  }
  at::Tensor small = at::full({5}, int64_t{rank}, at::kChar);
  comm.all_reduce_sum(small);
  expect(at::equal(small, at::full({5}, int64_t{n * (n - 1) / 2}, at::kChar)), "all_reduce_sum int8", rank);

  at::Tensor mask = rank == 0 ? at::arange(6).remainder(2).eq(0) : at::zeros({6}, at::kBool);
  comm.broadcast(mask, 0);
  expect(at::equal(mask, at::arange(6).remainder(2).eq(0)), "broadcast bool", rank);

  // Errors a user can make: a dtype MPI cannot carry, an average of integers.
  auto throws = [](auto&& call) {
    try {
      call();
    } catch (const dsee::CollectiveError&) {
      return true;
    }
    return false;
  };
  at::Tensor complex = at::zeros({2}, at::kComplexFloat);
  expect(throws([&] { comm.all_reduce_sum(complex); }), "complex dtype is refused", rank);
  at::Tensor integers = at::zeros({2}, at::kLong);
  expect(throws([&] { comm.all_reduce_average(integers); }), "integer average is refused", rank);
  expect(throws([&] { comm.all_reduce_sum(mask); }), "bool sum is refused", rank);

  // Byte counters: what this rank handed to the collectives above.
  const dsee::CollectiveStats before = comm.stats();
  at::Tensor counted = at::zeros({250}, at::kFloat);
  comm.all_reduce_sum(counted);
  comm.broadcast(counted, 0);
  expect(comm.stats().calls == before.calls + 2 && comm.stats().bytes == before.bytes + 2000, "byte counters", rank);

  // Every rank issued the same collectives in the same order.
  const std::uint64_t sequence = comm.stats().sequence;
  expect(sequence != 0, "the collective sequence hash moves", rank);
  try {
    dsee::fingerprint_verify(comm, "collective sequence", sequence);
  } catch (const dsee::FingerprintMismatch& error) {
    expect(false, error.what(), rank);
  }

  comm.barrier();
  at::Tensor total = at::full({1}, int64_t{failures}, at::kLong);
  comm.all_reduce_sum(total);
  if (rank == 0) std::printf("%d ranks: %s\n", n, total.item<int64_t>() == 0 ? "all collectives correct" : "FAILED");
  return total.item<int64_t>() == 0 ? 0 : 1;
}
