// Process bootstrap: MPI start-up and shutdown, and where this process sits.
//
// Works the same as a single process (no mpirun: MPI's singleton start),
// under mpirun / mpiexec and under Slurm's srun. The local rank comes from a
// shared-memory split of the world communicator, not from launcher-specific
// environment variables, so every launcher gives the same answer.
#pragma once

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

// Rank 0 receives every rank's text, in rank order; other ranks get {}.
std::vector<std::string> gather_strings_to_root(const std::string& text);

}  // namespace dsee
