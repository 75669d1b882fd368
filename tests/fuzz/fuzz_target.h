// One fuzz target, written once and built two ways (docs/testing.md,
// "Fuzzing"):
//   - by tests/fuzz/run with clang, libFuzzer, AddressSanitizer and UBSan
//     (DSEE_LIBFUZZER defined): DSEE_FUZZ_TARGET(name) is
//     LLVMFuzzerTestOneInput, one executable per target;
//   - by CMake with the project's compiler into fuzz_corpus_replay: the body
//     is registered under `name`, and the replay main feeds it every file of
//     tests/fuzz/corpus/<name>/ (the ctest tests fuzz_corpus_<name>).
// A body returns 0 for every input: it rejects bad input by catching
// dsee::Error and calls std::abort() when an accepted input breaks an
// invariant; any other exception, crash or sanitizer report is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

namespace dsee_fuzz {

using Target = int (*)(const std::uint8_t* data, std::size_t size);

// Every target linked into this executable, by name.
std::map<std::string, Target>& targets();

struct Registration {
  Registration(const char* name, Target target) { targets()[name] = target; }
};

// A folder of this process for the files a reader needs on disk (under
// /dev/shm where it exists), created on first use.
const std::filesystem::path& scratch_folder();

// Writes `bytes` to `path` (replacing it); aborts when the file cannot be written.
void write_bytes(const std::filesystem::path& path, std::string_view bytes);

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// An invariant of accepted input: aborts (the fuzzer's finding) when false.
inline void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace dsee_fuzz

#ifdef DSEE_LIBFUZZER
#define DSEE_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#else
#define DSEE_FUZZ_TARGET(name)                                                                \
  static int fuzz_target_##name(const std::uint8_t* data, std::size_t size);                  \
  static const ::dsee_fuzz::Registration fuzz_registration_##name(#name, fuzz_target_##name); \
  static int fuzz_target_##name(const std::uint8_t* data, std::size_t size)
#endif
