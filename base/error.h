// Errors, the two kinds (see Note [Errors] in error.cpp):
//
//   dsee::Error       a user error: bad input, a missing file, a wrong shape.
//                     The message says what was wrong, where (file, key,
//                     tensor) and what to do. Caught once in main: exit 1.
//   dsee::UsageError  a wrong command line: exit 2.
//
//   DSEE_CHECK(cond, fmt, args...)   throws dsee::Error with the formatted text
//   DSEE_ASSERT(cond, fmt, args...)  an internal invariant: prints and aborts
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace dsee {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

[[noreturn]] void assert_fail(const char* file, int line, const char* condition, const std::string& message);

}  // namespace dsee

#define DSEE_CHECK(cond, ...)                                     \
  do {                                                            \
    if (!(cond)) throw ::dsee::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

#define DSEE_ASSERT(cond, ...)                                                               \
  do {                                                                                       \
    if (!(cond)) ::dsee::assert_fail(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
  } while (0)
