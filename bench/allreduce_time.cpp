// bench_allreduce_time: the time of one all-reduce against its size, the
// measurements bench/scale fits its α–β model to. Run it under mpirun -n N.
// For each payload size (log-spaced from --min-bytes to --max-bytes, fp32)
// every rank all-reduces (sum) a buffer of that size through dsee's
// communicator — the call GradientSync makes once per optimizer step —
// --repeats times after one untimed call, with a barrier before each call so
// the clock measures the collective rather than drift between ranks. The
// time of a call is the slowest rank's (all ranks' times are gathered), and
// the size's figure is the median over the repeats. The bytes are the
// communicator's own count (CollectiveStats). Rank 0 prints one JSON line:
//   {"ranks": N, "backend": "mpi", "device": "cpu",
//    "points": [{"bytes": B, "median_s": t, "min_s": t0}, ...]}
// --device cuda with --backend nccl times NCCL on the local rank's GPU
// (synchronising the device before each clock reading).
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "base/error.h"
#include "core/model/device.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::int64_t> sizes_between(std::int64_t min_bytes, std::int64_t max_bytes, int per_decade) {
  std::vector<std::int64_t> out;
  const double step = std::pow(10.0, 1.0 / per_decade);
  for (double bytes = static_cast<double>(min_bytes); bytes <= static_cast<double>(max_bytes) * 1.0001; bytes *= step) {
    const std::int64_t rounded = std::max<std::int64_t>(4, static_cast<std::int64_t>(std::llround(bytes / 4)) * 4);
    if (out.empty() || rounded != out.back()) out.push_back(rounded);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("bench_allreduce_time: all-reduce time against payload size (run under mpirun)");
  std::int64_t min_bytes = 4, max_bytes = 64 << 20;
  int per_decade = 3, repeats = 20;
  std::string device_name = "cpu", backend = "auto";
  app.add_option("--min-bytes", min_bytes, "smallest payload in bytes (fp32: a multiple of 4)");
  app.add_option("--max-bytes", max_bytes, "largest payload in bytes");
  app.add_option("--per-decade", per_decade, "sizes per factor of ten");
  app.add_option("--repeats", repeats, "timed calls per size (the median is reported)");
  app.add_option("--device", device_name, "cpu or cuda (GPU local_rank of the node)");
  app.add_option("--backend", backend, "communicator: auto (mpi on cpu, nccl on cuda), mpi or nccl");
  CLI11_PARSE(app, argc, argv);

  try {
    DSEE_CHECK(min_bytes >= 4 && max_bytes >= min_bytes && per_decade >= 1 && repeats >= 1,
               "need 4 <= --min-bytes <= --max-bytes, --per-decade >= 1 and --repeats >= 1");
    dsee::MpiSession mpi;
    at::set_num_threads(1);
    const c10::Device device = dsee::device_choose(device_name, mpi.place().local_rank);
    const bool cuda = device.is_cuda();
    dsee::CommunicatorOptions options;
    options.backend = backend;
    options.device = device;
    options.local_rank = mpi.place().local_rank;
    options.timeout_s = 300;
    auto comm = dsee::make_communicator(options);

    nlohmann::json points = nlohmann::json::array();
    for (const std::int64_t bytes : sizes_between(min_bytes, max_bytes, per_decade)) {
      at::Tensor buffer = at::ones({bytes / 4}, at::TensorOptions().dtype(at::kFloat).device(device));
      const auto before = comm->stats().bytes;
      std::vector<double> own;
      for (int i = 0; i <= repeats; ++i) {
        comm->barrier();
        const auto t0 = Clock::now();
        comm->all_reduce_sum(buffer);
        if (cuda) torch::cuda::synchronize();
        const auto t1 = Clock::now();
        if (i > 0) own.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
      const auto counted = static_cast<std::int64_t>(comm->stats().bytes - before) / (repeats + 1);
      // The slowest rank's time per call.
      const at::Tensor all = comm->all_gather(at::tensor(own, at::kDouble).to(device)).cpu().view({-1, repeats});
      std::vector<double> slowest(static_cast<std::size_t>(repeats));
      for (int i = 0; i < repeats; ++i) slowest[static_cast<std::size_t>(i)] = all.select(1, i).max().item<double>();
      std::sort(slowest.begin(), slowest.end());
      const double median = repeats % 2 == 1 ? slowest[static_cast<std::size_t>(repeats / 2)]
                                             : 0.5 * (slowest[static_cast<std::size_t>(repeats / 2 - 1)] +
                                                      slowest[static_cast<std::size_t>(repeats / 2)]);
      points.push_back({{"bytes", counted}, {"median_s", median}, {"min_s", slowest.front()}});
    }
    if (comm->rank() == 0) {
      const nlohmann::json out = {{"ranks", comm->world_size()},
                                  {"backend", comm->backend()},
                                  {"device", device.str()},
                                  {"repeats", repeats},
                                  {"points", points}};
      std::printf("%s\n", out.dump().c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce_time: %s\n", e.what());
    return 1;
  }
}
