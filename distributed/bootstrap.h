// Process bootstrap: MPI start-up and shutdown, and where this process sits.
//
// Works the same as a single process (no mpirun: MPI's singleton start),
// under mpirun / mpiexec and under Slurm's srun. The local rank comes from a
// shared-memory split of the world communicator, not from launcher-specific
// environment variables, so every launcher gives the same answer.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dsee {

struct ProcessPlace {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes on this node
  int local_size = 1;
  std::string host;
};

// Owns MPI for the life of the program: MPI_Init_thread in the constructor,
// MPI_Finalize in the destructor. At most one exists; it also sets the rank
// in the log pattern.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const ProcessPlace& place() const { return place_; }
  std::string mpi_library_version() const;

 private:
  ProcessPlace place_;
};

// The message for a process that srun started as one of several tasks but
// that MPI sees as a world of one (srun's MPI plugin does not match Open
// MPI's, so every task would run the whole job alone and write the same run
// directory), or "" when the launch is consistent. `getenv` reads the
// environment (std::getenv in the program; a map in tests). Processes that
// mpirun started (OMPI_COMM_WORLD_SIZE set) are never flagged.
std::string launch_mismatch(int world_size, const std::function<const char*(const char*)>& getenv);

// Rank 0 receives every rank's text, in rank order; other ranks get {}.
std::vector<std::string> gather_strings_to_root(const std::string& text);

}  // namespace dsee
