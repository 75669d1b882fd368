// dsee report --table: the paper's tables over the runs of one or more
// sweeps, each cell the mean ± sample std over seeds (recipes/seed_stats.h)
// of a metric at the run's last stage (summary.json's evaluation: after
// re-tuning when the run pruned, else after training).
//
// A table spec (TOML; the built-in ones are the same text, report_specs.cpp)
// says which key makes the columns, which keys are replicates, which metrics
// and counts to show; everything else comes from the runs: the rows are the
// distinct combinations of the keys whose values differ between runs of one
// column (compared in the runs' resolved config.toml), labelled with those
// keys ("dsee r=8 c=64"). Runs listed in a sweep.tsv without a summary.json
// are counted in their cells as missing, running or failed, never dropped.
// The format of a spec and of every output: docs/report.md.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace dsee {

struct ReportSpec {
  std::string name;                                    // "1", "fig2", or the spec file's stem
  std::string title;                                   // printed above the table
  std::string column = "task.name";                    // the key whose values are the columns
  std::vector<std::string> replicates = {"run.seed"};  // the keys a cell's mean and std run over
  std::vector<std::string> metrics = {"main"};         // "main" (the task's main metric) or summary metric names
  std::map<std::string, std::vector<std::string>> column_metrics;  // per column value: its metrics instead
  std::vector<std::string> extras;            // trainable_parameters, nonzero_parameters, flops_ratio
  std::vector<std::string> rows;              // row keys, in label order (the others follow, sorted)
  std::vector<std::string> ignore;            // keys that differ but make no rows
  std::map<std::string, std::string> labels;  // default row label → the label to print
  std::string split = "dev";                  // summary.json's "dev" or "test" scores
  std::string plot_x;                         // a row key to plot the metric against ("omega.c")
  int decimals = 3;
};

// The spec in `text` (`source` names it in errors): dsee::Error naming the
// source and the key for an unknown key, a wrong type or a bad extra.
ReportSpec report_spec_parse(const std::string& text, const std::string& source, const std::string& name);
// A built-in table ("1" … "9", "fig2") or a spec file; dsee::Error listing
// the built-in names when `name_or_file` is neither.
ReportSpec report_spec_load(const std::string& name_or_file);
// The built-in tables' names and spec texts, in order.
const std::vector<std::pair<std::string, std::string>>& report_spec_builtins();

enum class RunStatus { finished, running, failed, missing };
const char* run_status_name(RunStatus status);

// One run of the table: listed in a sweep.tsv or found as a run directory.
struct ReportRun {
  std::filesystem::path dir;
  std::string label;  // the path under the folder given (with several folders, under its parent)
  std::map<std::string, std::string> config;  // resolved recipe key → value as config.toml writes it
  RunStatus status = RunStatus::missing;
  nlohmann::json summary;   // when finished
  std::string row, column;  // the row label and column the table put it in
};

// The runs under `dirs`: for each folder, the runs of every sweep.tsv in it
// or one level below (expected runs, finished or not), else every run
// directory (a config.toml) in it, one or two levels below. dsee::Error when
// there are none, or a summary.json or config.toml cannot be read.
std::vector<ReportRun> report_runs_find(const std::vector<std::filesystem::path>& dirs);

struct ReportCell {
  std::string column, quantity;  // quantity: a metric name or an extra
  std::vector<double> values;    // finished runs' values, in run order
  std::vector<std::string> seeds, runs;
};

struct ReportRow {
  std::string label;
  std::map<std::string, std::string> keys;  // row key → value (as printed)
  std::vector<ReportCell> cells;
  // Per column: the runs expected, and those missing, running and failed.
  std::map<std::string, std::map<RunStatus, std::vector<std::string>>> runs;
};

struct ReportTable {
  ReportSpec spec;
  std::vector<std::string> row_keys, columns;
  std::map<std::string, std::vector<std::string>> metrics;  // column → metric names shown
  std::vector<ReportRow> rows;
  std::vector<std::pair<std::string, RunStatus>> unfinished;  // run label, status
  std::vector<ReportRun> runs;
};

// Groups `runs` as `spec` says (see the top of this file).
ReportTable report_table_build(const ReportSpec& spec, std::vector<ReportRun> runs);

// Markdown (a title, a pipe table, a footer listing unfinished runs); CSV
// with one line per (row, column, quantity); JSON of the same.
std::string report_table_markdown(const ReportTable& table);
std::string report_table_csv(const ReportTable& table);
nlohmann::json report_table_json(const ReportTable& table);

}  // namespace dsee
