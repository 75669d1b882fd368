// A job whose ranks cannot all finish a collective (run by
// test_mpi_faults.sh, which times the job and checks its exit):
//   stall  the last rank never enters step 7's all-reduce; the others'
//          watchdog must abort the job after the timeout;
//   kill   the last rank dies by SIGKILL at step 5; the job must end
//          non-zero within the timeout either way (see Note [dead ranks]).
// argv: SCENARIO TIMEOUT_S
#include <ATen/ATen.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "base/log.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: test_mpi_faults stall|kill TIMEOUT_S\n");
    return 2;
  }
  const std::string scenario = argv[1];
  dsee::LogOptions log;
  dsee::log_init(log);
  dsee::MpiSession mpi;
  try {
    auto comm = dsee::make_communicator({.backend = "mpi", .timeout_s = std::stod(argv[2])});
    const bool odd_one = comm->rank() == comm->world_size() - 1;
    for (int step = 0; step < 20; ++step) {
      comm->set_step(step);
      if (odd_one && scenario == "stall" && step == 7) std::this_thread::sleep_for(std::chrono::seconds(120));
      if (odd_one && scenario == "kill" && step == 5) std::raise(SIGKILL);
      at::Tensor gradients = at::ones({1000});
      comm->all_reduce_average(gradients);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::fprintf(stderr, "rank %d: finished all steps, which a fault test must not\n", comm->rank());
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
