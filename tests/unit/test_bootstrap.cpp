// The launch check of distributed/bootstrap.h: a process srun started as one
// of several tasks that MPI sees as a world of one is refused with the fix.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "distributed/bootstrap.h"

namespace {

std::string mismatch(int world_size, const std::map<std::string, std::string>& env) {
  return dsee::launch_mismatch(world_size, [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(LaunchMismatch, SrunTasksThatMpiDoesNotConnectAreRefused) {
  const std::string message = mismatch(1, {{"SLURM_PROCID", "2"}, {"SLURM_STEP_NUM_TASKS", "4"}});
  EXPECT_NE(message.find("srun started 4 tasks"), std::string::npos) << message;
  EXPECT_NE(message.find("(task 2)"), std::string::npos) << message;
  EXPECT_NE(message.find("srun --mpi=pmix"), std::string::npos) << message;
}

TEST(LaunchMismatch, ConsistentLaunchesPass) {
  EXPECT_EQ(mismatch(1, {}), "") << "a plain process";
  EXPECT_EQ(mismatch(4, {{"SLURM_PROCID", "2"}, {"SLURM_STEP_NUM_TASKS", "4"}}), "") << "srun + PMIx";
  EXPECT_EQ(mismatch(1, {{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}}), "") << "srun -n 1";
  EXPECT_EQ(mismatch(1, {{"SLURM_PROCID", "0"}}), "") << "a batch script, no step";
  EXPECT_EQ(mismatch(1, {{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "4"}, {"OMPI_COMM_WORLD_SIZE", "1"}}), "")
      << "mpirun -n 1 inside an allocation";
  EXPECT_EQ(mismatch(1, {{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "four"}}), "") << "unreadable: no claim";
}

}  // namespace
