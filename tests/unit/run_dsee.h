// Runs the real dsee binary (DSEE_BINARY) from a unit test: exit code and
// everything it printed (stdout and stderr together); small file helpers
// the tests share.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace dsee_test {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr
};

// `prefix` goes before the binary (e.g. "PATH=/x:$PATH "); arguments are shell text.
inline Result run_dsee(const std::string& arguments, const std::string& prefix = "") {
  std::string command = prefix + DSEE_BINARY;
  command.append(" ").append(arguments).append(" 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

// A file's whole contents, bytes as they are (a failed test if it cannot be read).
inline std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A file in the temporary directory, unique to this process.
inline std::filesystem::path write_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("dsee-test-" + std::to_string(getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path;
}

}  // namespace dsee_test
