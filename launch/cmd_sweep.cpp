// dsee sweep: expand a sweep file (recipes/sweep.h) into runs and execute
// them one after another in this allocation, or submit them as a Slurm job
// array. `dsee report` tabulates them (launch/cmd_report.cpp).
//
// Files written into <out_dir>/<sweep name>/:
//   sweep.tsv       index, run name, run directory, the --set overrides
//   sweep.commands  one shell command per run (line i+1 = array task i)
//   sweep.sbatch    with --slurm: the job-array script that runs line
//                   $SLURM_ARRAY_TASK_ID + 1 of sweep.commands under srun
//                   (launch/sweep_sbatch.h)
// A run whose directory already holds summary.json is finished and skipped,
// so re-running a sweep (or requeueing its array) only does what is left.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "base/error.h"
#include "base/files.h"
#include "base/log.h"
#include "launch/commands.h"
#include "launch/sweep_sbatch.h"
#include "recipes/run_dir.h"
#include "recipes/sweep.h"

namespace dsee {
namespace {

std::filesystem::path self_path() {
  std::error_code error;
  auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  DSEE_CHECK(!error, "cannot find the dsee executable (/proc/self/exe): {}", error.message());
  return path;
}

std::vector<std::string> run_argv(const std::filesystem::path& dsee, const Sweep& sweep, const SweepRun& run) {
  std::vector<std::string> argv = {dsee.string(), sweep.command, sweep.recipe.string()};
  for (const auto& o : run.overrides) {
    argv.push_back("--set");
    argv.push_back(o);
  }
  return argv;
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + shell_quote(a);
  return line;
}

// Runs argv as a child process; its exit status (128 + signal when killed).
int run_child(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  DSEE_CHECK(pid >= 0, "cannot start a run: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    execv(args[0], args.data());
    std::fprintf(stderr, "dsee sweep: cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) DSEE_CHECK(errno == EINTR, "waiting for a run failed: {}", std::strerror(errno));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool run_finished(const Sweep& sweep, const SweepRun& run) {
  return sweep.command == "run" && std::filesystem::exists(RunDir(run.run_dir).summary());
}

}  // namespace

Command sweep_command(CLI::App& app) {
  struct Options {
    std::string file;
    bool dry_run = false, slurm = false, keep_going = false;
    std::vector<std::string> sbatch_args, overrides;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("sweep", "Expand a sweep file into runs and execute them (or submit a Slurm array)");
  sub->add_option("sweep", options->file, "Sweep file (TOML): base recipe + [grid]/[zip] lists")->required();
  sub->add_option("--set", options->overrides,
                  "Override a key in every run: --set paths.models=/data/models (repeatable; not a swept key)");
  sub->add_flag("--dry-run", options->dry_run, "Write sweep.tsv and sweep.commands, print the commands, run nothing");
  sub->add_flag("--slurm", options->slurm, "Submit the runs as one Slurm job array (sbatch) instead of running here");
  sub->add_option("--sbatch-arg", options->sbatch_args,
                  "Extra sbatch option for --slurm (repeatable), e.g. --sbatch-arg=--gres=gpu:4");
  sub->add_flag("--keep-going", options->keep_going, "Run the remaining runs after one fails (exit status still 1)");
  return {sub, [options] {
            const Sweep sweep = sweep_load(options->file, options->overrides);
            const auto dsee = self_path();
            folder_create(sweep.out_dir);
            std::string tsv = "index\tname\trun_dir\toverrides\n", commands;
            for (std::size_t i = 0; i < sweep.runs.size(); ++i) {
              const auto& run = sweep.runs[i];
              std::string overrides;
              for (const auto& o : run.overrides) overrides += (overrides.empty() ? "" : " ") + o;
              tsv += fmt::format("{}\t{}\t{}\t{}\n", i, run.name, run.run_dir.string(), overrides);
              commands += command_line(run_argv(dsee, sweep, run)) + "\n";
            }
            file_write_text(sweep.out_dir / "sweep.tsv", tsv);
            file_write_text(sweep.out_dir / "sweep.commands", commands);
            spdlog::info("sweep '{}': {} runs of '{} {}' under {}", sweep.name, sweep.runs.size(), sweep.command,
                         sweep.recipe.string(), sweep.out_dir.string());

            if (options->slurm) {
              const auto script = sweep.out_dir / "sweep.sbatch";
              file_write_text(script, sweep_sbatch_script(options->file, sweep));
              std::vector<std::string> argv = {"sbatch"};
              argv.insert(argv.end(), options->sbatch_args.begin(), options->sbatch_args.end());
              argv.push_back(script.string());
              std::cout << command_line(argv) << "\n";
              if (options->dry_run) return 0;
              // execvp semantics: sbatch from PATH.
              std::vector<char*> args;
              for (auto& a : argv) args.push_back(a.data());
              args.push_back(nullptr);
              std::fflush(stdout);
              execvp("sbatch", args.data());
              throw Error(fmt::format("cannot run sbatch ({}): is this a Slurm login node?", std::strerror(errno)));
            }

            if (options->dry_run) {
              std::cout << commands;
              return 0;
            }
            int failed = 0;
            for (std::size_t i = 0; i < sweep.runs.size(); ++i) {
              const auto& run = sweep.runs[i];
              if (run_finished(sweep, run)) {
                spdlog::info("[{}/{}] {}: finished before (summary.json), skipped", i + 1, sweep.runs.size(), run.name);
                continue;
              }
              spdlog::info("[{}/{}] {}", i + 1, sweep.runs.size(), run.name);
              const int status = run_child(run_argv(dsee, sweep, run));
              if (status == 0) continue;
              ++failed;
              spdlog::error("[{}/{}] {} failed with exit status {}", i + 1, sweep.runs.size(), run.name, status);
              if (!options->keep_going)
                throw Error(
                    fmt::format("sweep stopped at run {} ({}); fix it and re-run the sweep: finished runs "
                                "are skipped (or pass --keep-going)",
                                i, run.name));
            }
            DSEE_CHECK(failed == 0, "{} of {} runs failed (see the messages above)", failed, sweep.runs.size());
            return 0;
          }};
}

}  // namespace dsee
