// Every environment variable the dsee program reads, named in one place.
// (The shell launchers read their own; docs/command-line.md lists them all.)
#pragma once

namespace dsee::env_vars {

// The log level (trace … off) when --log-level is not given.
inline constexpr const char* log_level = "DSEE_LOG_LEVEL";
// The Python of `dsee score --official` (default: the build's DSEE_PYTHON, the checkout's .venv).
inline constexpr const char* python = "DSEE_PYTHON";
// Tests only: `dsee run` raises SIGTERM on itself after this many optimizer
// steps of a training stage in this process (the resume tests' interruption).
inline constexpr const char* test_stop_after_step = "DSEE_TEST_STOP_AFTER_STEP";
// Tests only: RANK:STEP (that rank perturbs a trainable tensor after that
// optimizer step) or RANK:versions (its library versions text differs): the
// fingerprint checks' tests.
inline constexpr const char* test_perturb_rank = "DSEE_TEST_PERTURB_RANK";
// Tests only: "WHAT=SECONDS" makes rank 0 of `dsee run` sleep before the
// rank-0 work named WHAT (distributed/ranks.h root_does), e.g. "preparing the
// task data=5" (the long-wait tests of the other ranks' watchdog).
inline constexpr const char* test_slow_root = "DSEE_TEST_SLOW_ROOT";
// Tests only: every training step of `dsee run` lasts this many seconds
// longer (the tests that signal a job mid-training need time to land).
inline constexpr const char* test_step_pause_s = "DSEE_TEST_STEP_PAUSE_S";
// Tests only: "NAME" or "NAME:ERRNO" (ENOSPC, the default, EDQUOT, EROFS or
// EIO): every write to a file whose path ends in NAME after a '/' (a name,
// "step-4.h5", or the end of a path, "export/model.safetensors") fails after
// half of its first write with that errno, as a full or broken disk would
// fail it (the full-disk tests; Note [Injected write failures] in
// base/files.cpp).
inline constexpr const char* test_fail_write = "DSEE_TEST_FAIL_WRITE";

}  // namespace dsee::env_vars
