// Every environment variable the dsee program reads, named in one place.
// (The shell launchers read their own; README.md lists them.)
#pragma once

namespace dsee::env_vars {

// The log level (trace … off) when --log-level is not given.
inline constexpr const char* log_level = "DSEE_LOG_LEVEL";

}  // namespace dsee::env_vars
