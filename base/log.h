// Logging: one spdlog logger per process with the rank in every line.
//
// Before MPI is up the rank is unknown and printed as "-"; log_set_rank()
// fixes it once the bootstrap knows it. Info and below go to rank 0 only
// unless log_all_ranks is set; warnings and errors come from every rank.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace dsee {

struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error, off
  bool all_ranks = false;
};

// Parses a level name; throws UsageError naming the accepted names.
spdlog::level::level_enum log_level_from_name(const std::string& name);

// Installs the dsee logger (stderr) as spdlog's default.
void log_init(const LogOptions& options);

// Called by the bootstrap once rank and world size are known.
void log_set_rank(int rank, int world_size);

}  // namespace dsee
