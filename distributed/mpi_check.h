// MPI return codes as typed exceptions (the communicator runs with
// MPI_ERRORS_RETURN, so a failure reaches us instead of killing the job
// without a word).
#pragma once

#include <mpi.h>

#include <string>

#include "distributed/communicator.h"

namespace dsee {

inline void mpi_check(int code, const char* operation) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw CollectiveError(fmt::format("{} failed (mpi backend): {}", operation, std::string(text, length)));
}

}  // namespace dsee
