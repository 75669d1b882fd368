// Note [Errors]
// A user can fix a dsee::Error without reading our code: the message names
// the file, the key or tensor, the expected and the actual value, and the next
// step. Everything else is a bug in dsee: an internal assertion prints where
// it failed and aborts, so the core dump and the stack stay available instead
// of being turned into a tidy message that hides the bug.
#include "base/error.h"

#include <cstdio>
#include <cstdlib>

namespace dsee {

void assert_fail(const char* file, int line, const char* condition, const std::string& message) {
  std::fprintf(stderr, "dsee internal error at %s:%d: assertion `%s` failed: %s\n", file, line, condition,
               message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace dsee
