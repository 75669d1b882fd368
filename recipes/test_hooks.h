// The test hooks of `dsee run`: environment variables (named in
// base/env_vars.h) that only the tests set, to interrupt, slow down or
// perturb a run at a chosen point. Read once, on first use, into one struct;
// unset, each hook does nothing. (DSEE_TEST_SLOW_ROOT belongs to
// distributed/ranks.cpp, beside the rank-0 work it delays.)
#pragma once

#include <cstdint>
#include <string>

namespace dsee {

struct TestHooks {
  // DSEE_TEST_STOP_AFTER_STEP: optimizer steps of this process before it
  // raises SIGTERM on itself (the resume tests' interruption); 0: never.
  std::int64_t stop_after_step = 0;
  // DSEE_TEST_STEP_PAUSE_S: seconds added to every training step (tests that
  // signal a job mid-training need time to land); 0: none.
  double step_pause_s = 0;
  // DSEE_TEST_PERTURB_RANK = RANK:WHAT: that rank perturbs what the ranks
  // compare, so the fingerprint checks have a divergence to catch. WHAT is an
  // optimizer step (after it, the rank adds 1 to the first value of its first
  // trainable tensor) or "versions" (the rank's library versions text gets a
  // line more). perturb_rank -1: none.
  int perturb_rank = -1;
  std::string perturb_what;

  bool perturbs(int rank, const std::string& what) const { return perturb_rank == rank && perturb_what == what; }
};

// The hooks of this process. dsee::Error for a malformed DSEE_TEST_PERTURB_RANK.
const TestHooks& test_hooks();

}  // namespace dsee
