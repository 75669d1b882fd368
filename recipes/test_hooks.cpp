// The test hooks: see test_hooks.h.
#include "recipes/test_hooks.h"

#include <cstdlib>

#include "base/env_vars.h"
#include "base/error.h"

namespace dsee {
namespace {

TestHooks test_hooks_read() {
  TestHooks hooks;
  if (const char* text = std::getenv(env_vars::test_stop_after_step)) hooks.stop_after_step = std::atoll(text);
  if (const char* text = std::getenv(env_vars::test_step_pause_s)) hooks.step_pause_s = std::atof(text);
  if (const char* text = std::getenv(env_vars::test_perturb_rank); text != nullptr && *text != 0) {
    const std::string value = text;
    const auto colon = value.find(':');
    DSEE_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < value.size(),
               "{}='{}': expected RANK:STEP or RANK:versions", env_vars::test_perturb_rank, value);
    hooks.perturb_rank = std::atoi(value.substr(0, colon).c_str());
    hooks.perturb_what = value.substr(colon + 1);
  }
  return hooks;
}

}  // namespace

const TestHooks& test_hooks() {
  static const TestHooks hooks = test_hooks_read();
  return hooks;
}

}  // namespace dsee
