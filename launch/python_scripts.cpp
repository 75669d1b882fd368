// The project's Python and its scripts: see python_scripts.h.
#include "launch/python_scripts.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/env_vars.h"
#include "base/error.h"

#ifndef DSEE_SOURCE_DIR
#error "launch/CMakeLists.txt defines DSEE_SOURCE_DIR (the checkout, for launch/*.py)"
#endif
#ifndef DSEE_DEFAULT_PYTHON
#error "launch/CMakeLists.txt defines DSEE_DEFAULT_PYTHON (the configured DSEE_PYTHON)"
#endif

namespace dsee {

std::string project_python() {
  if (const char* python = std::getenv(env_vars::python); python != nullptr && *python != '\0') return python;
  return DSEE_DEFAULT_PYTHON;
}

std::string project_script(const std::string& name) { return std::string(DSEE_SOURCE_DIR) + "/launch/" + name; }

int python_script_run(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {project_python(), project_script(script)};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> pointers;
  for (auto& a : argv) pointers.push_back(a.data());
  pointers.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = fork();
  DSEE_CHECK(pid >= 0, "cannot run {}: fork failed: {}", script, std::strerror(errno));
  if (pid == 0) {
    execv(pointers[0], pointers.data());
    std::fprintf(stderr, "dsee: cannot execute the Python %s: %s\n", pointers[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    DSEE_CHECK(errno == EINTR, "waiting for {} failed: {}", script, std::strerror(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace dsee
