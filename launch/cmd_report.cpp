// dsee report: the runs under folders as one table. Without --table, every
// summary.json value of every run (recipes/report.h); with --table, one of
// the paper's tables or a spec file's, mean ± std over seeds
// (recipes/report_table.h), and with --plot its figures and each run's
// curves, drawn by launch/report_plot.py (docs/report.md).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "base/env_vars.h"
#include "base/error.h"
#include "base/files.h"
#include "launch/commands.h"
#include "launch/python_scripts.h"
#include "recipes/report.h"
#include "recipes/report_table.h"

namespace dsee {

Command report_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> dirs;
    std::string format, table, out, split;
    bool plot = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand(
      "report",
      "Tabulate the runs under folders (sweeps) from their summary.json; --table: a paper table (docs/report.md)");
  sub->add_option("dirs", options->dirs, "Sweep or run folders (several with --table)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--table", options->table,
                  "A paper table (1, 2, 3, 4, 5, 6, 7, 9, fig2) or a table spec file (TOML): mean ± std over seeds");
  sub->add_option("--format", options->format,
                  "With --table: markdown (default), csv or json; without: table (default), tsv or json")
      ->check(CLI::IsMember({"table", "tsv", "json", "markdown", "csv"}));
  sub->add_option("--split", options->split,
                  "With --table: the scores of this split (dev, or test for data-to-text runs with eval.splits "
                  "[\"dev\", \"test\"]) instead of the table's own (Tables 2 and 4: test)")
      ->check(CLI::IsMember({"dev", "test"}));
  sub->add_flag("--plot", options->plot, "With --table: draw its figures and each run's curves as PNG files");
  sub->add_option("--out", options->out,
                  "With --table: the folder for the table file and the plots (default: the first folder)");
  return {sub, [options] {
            if (options->table.empty()) {
              DSEE_CHECK(!options->plot && options->out.empty() && options->split.empty(),
                         "--plot, --out and --split need --table (docs/report.md)");
              DSEE_CHECK(options->dirs.size() == 1, "give one folder without --table ({} given)", options->dirs.size());
              const std::string format = options->format.empty() ? "table" : options->format;
              DSEE_CHECK(format == "table" || format == "tsv" || format == "json",
                         "--format {} needs --table; without it the formats are table, tsv and json", format);
              std::cout << report_text(options->dirs.front(), format == "json"  ? ReportFormat::json
                                                              : format == "tsv" ? ReportFormat::tsv
                                                                                : ReportFormat::table);
              return 0;
            }
            const std::string format = options->format.empty() ? "markdown" : options->format;
            DSEE_CHECK(format == "markdown" || format == "csv" || format == "json",
                       "--format {} is not a table format; with --table the formats are markdown, csv and json",
                       format);
            ReportSpec spec = report_spec_load(options->table);
            if (!options->split.empty()) spec.split = options->split;
            std::vector<std::filesystem::path> dirs(options->dirs.begin(), options->dirs.end());
            const ReportTable table = report_table_build(spec, report_runs_find(dirs));
            const std::string text = format == "csv"    ? report_table_csv(table)
                                     : format == "json" ? report_table_json(table).dump(2) + "\n"
                                                        : report_table_markdown(table);
            std::cout << text << std::flush;
            const std::filesystem::path out = options->out.empty() ? dirs.front() : std::filesystem::path(options->out);
            const std::string stem = "table-" + spec.name;
            if (!options->out.empty()) {
              folder_create(out);
              file_write_text(out / (stem + (format == "csv" ? ".csv" : format == "json" ? ".json" : ".md")), text);
            }
            if (!options->plot) return 0;
            folder_create(out);
            const auto data = out / (stem + "-plot.json");
            file_write_json(data, report_table_json(table));
            const int status = python_script_run("report_plot.py", {"--data", data.string(), "--out", out.string()});
            DSEE_CHECK(status == 0,
                       "dsee report --plot: launch/report_plot.py ({}) exited with {} (its message is above); it "
                       "needs the project's Python with matplotlib (launch/setup makes .venv from "
                       "requirements.txt; or set {} to a python with matplotlib)",
                       project_python(), status, env_vars::python);
            return 0;
          }};
}

}  // namespace dsee
