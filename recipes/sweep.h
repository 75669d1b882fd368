// Sweeps: one base recipe and lists of values for some of its keys, expanded
// into runs with distinct run directories (launch/sweep, `dsee sweep`).
//
// A sweep file (TOML):
//   recipe  = "demo.toml"    # the base recipe, relative to the sweep file
//   name    = "lr-rank"      # default: the sweep file's stem
//   out_dir = "runs"         # default: the recipe's run.out_dir
//   command = "run"          # the dsee subcommand each run executes
//   [grid]                   # every combination of these lists
//   "train.lr" = [1e-4, 3e-4]
//   [zip]                    # these lists advance together (equal lengths);
//   "run.seed" = [1, 2, 3]   #   the zipped tuple is one more grid axis
// Keys may also be written as nested tables ([grid.train] lr = [...]).
// Several zip groups, each its own axis, are written as an array of tables:
//   [[zip]]                  # a task and its own settings
//   "task.name" = ["rte", "sst2"]
//   "task.data_dir" = ["${paths.data}/glue/RTE", "${paths.data}/glue/SST-2"]
//   [[zip]]                  # a method and its budget
//   "tuning.method" = ["lora", "dsee"]
//   "tuning.rank" = [16, 8]
//
// Runs are numbered in a fixed order: grid keys sorted by name, the last key
// varying fastest, the zip axes after them in the file's order. Run i is named
// "<i, 3 digits>-<leaf>=<value>-..." over the swept keys (a value holding a
// '/' in a zip group of several keys left out; at most 160 characters), and runs with the
// sweep's own overrides (`dsee sweep FILE --set paths.models=/data/models`:
// every run, and the base recipe the sweep reads out_dir from), then
// --set run.out_dir=<out_dir>/<name> --set run.name=<that name>, then one
// --set per swept key; an override of a swept key is an error. Every run's recipe is resolved against the schema
// when the sweep is expanded, so a bad key or value fails before any run.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dsee {

struct SweepRun {
  std::string name;                    // "003-lr=0.0003-seed=2"
  std::filesystem::path run_dir;       // <out_dir>/<sweep name>/<name>
  std::vector<std::string> overrides;  // KEY=VALUE, for --set
};

struct Sweep {
  std::string name;
  std::string command = "run";
  std::filesystem::path recipe;   // as resolved (relative to the current directory or absolute)
  std::filesystem::path out_dir;  // <out_dir>/<name>
  std::vector<SweepRun> runs;
};

// Reads and expands `file` with `overrides` ("key=value") applied to every
// run; dsee::Error names the file, the key and the problem (unknown recipe
// key, empty list, zip lists of unequal length, a value the recipe rejects,
// more than `max_runs` runs).
Sweep sweep_load(const std::filesystem::path& file, const std::vector<std::string>& overrides = {},
                 std::size_t max_runs = 10000);

}  // namespace dsee
