// Runs the real dsee binary (DSEE_BINARY) from a unit test: exit code and
// everything it printed (stdout and stderr together, or stdout on its own as
// well); the file helpers the tests share come with it (test_files.h).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "test_files.h"

namespace dsee_test {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr
};

// Runs a shell command line; its exit code (128 + the signal when killed) and stdout.
inline Result run_shell(const std::string& command) {
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

// `prefix` goes before the binary (e.g. "PATH=/x:$PATH "); arguments are shell text.
inline Result run_dsee(const std::string& arguments, const std::string& prefix = "") {
  return run_shell(prefix + DSEE_BINARY + " " + arguments + " 2>&1");
}

struct SplitResult {
  int exit_code;
  std::string stdout_text;  // stdout alone
  std::string output;       // stdout then stderr
};

// The same with stdout kept apart: stderr goes through `stderr_file`.
inline SplitResult run_dsee_split(const std::string& arguments, const std::filesystem::path& stderr_file) {
  const Result r = run_shell(std::string(DSEE_BINARY) + " " + arguments + " 2>" + stderr_file.string());
  return {r.exit_code, r.output, r.output + file_text(stderr_file)};
}

}  // namespace dsee_test
