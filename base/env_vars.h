// Every environment variable the dsee program reads, named in one place.
// (The shell launchers read their own; docs/command-line.md lists them all.)
#pragma once

namespace dsee::env_vars {

// The log level (trace … off) when --log-level is not given.
inline constexpr const char* log_level = "DSEE_LOG_LEVEL";
// Tests only: `dsee run` raises SIGTERM on itself after this many optimizer
// steps of a training stage in this process (the resume tests' interruption).
inline constexpr const char* test_stop_after_step = "DSEE_TEST_STOP_AFTER_STEP";
// Tests only: RANK:STEP (that rank perturbs a trainable tensor after that
// optimizer step) or RANK:versions (its library versions text differs): the
// fingerprint checks' tests.
inline constexpr const char* test_perturb_rank = "DSEE_TEST_PERTURB_RANK";
// Tests only: "WHAT=SECONDS" makes rank 0 of `dsee run` sleep before the
// rank-0 work named WHAT (recipes/ranks.h root_does), e.g. "preparing the
// task data=5" (the long-wait tests of the other ranks' watchdog).
inline constexpr const char* test_slow_root = "DSEE_TEST_SLOW_ROOT";
// Tests only: every training step of `dsee run` lasts this many seconds
// longer (the tests that signal a job mid-training need time to land).
inline constexpr const char* test_step_pause_s = "DSEE_TEST_STEP_PAUSE_S";

}  // namespace dsee::env_vars
