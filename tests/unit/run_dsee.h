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

// `dsee run` arguments for the shrunken one-arm demo recipe: DSEE with
// unstructured pruning, dropout and gradient accumulation; 128 training
// examples in micro-batches of 16, 2 per step (4 steps per epoch); a
// checkpoint every 2 steps, an evaluation every 3; `extra` adds more
// (" --set train.epochs=2").
inline std::string one_arm_run(const std::filesystem::path& out, const std::string& extra) {
  return "run " + std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml --set run.out_dir=" + out.string() +
         " --set 'run.compare=[]' --set tuning.method=dsee --set tuning.rank=4 --set tuning.dropout=0.2"
         " --set prune.kind=unstructured --set prune.p_adapt=0.3 --set prune.p_rest=0.3"
         " --set task.train_size=128 --set task.dev_size=64 --set retune.epochs=1 --set train.grad_accumulation=2"
         " --set train.eval_every=3 --set ckpt.every=2 --set ckpt.keep_last=2" +
         extra;
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
