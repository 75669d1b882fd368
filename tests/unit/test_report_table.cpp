// dsee report --table: runs grouped into rows by the keys that differ,
// seeds averaged (mean ± sample std), missing / running / failed runs counted
// in their cells, the spec format and its errors, the CSV and JSON outputs.
// The runs here are written by the test (config.toml from the recipe schema,
// summary.json by hand); tests/parity/test_report.py runs real sweeps.
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "base/config.h"
#include "error_of.h"
#include "recipes/recipe_schema.h"
#include "recipes/report_table.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

class ReportTableTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsee-report-" + std::to_string(getpid()) + "-" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  // POSIX removal: std::filesystem::remove_all crashes next to libtorch.
  void TearDown() override { std::system(("rm -rf '" + dir_.string() + "'").c_str()); }

  void write(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  // A run of sweep `sweep` named `name` with `overrides`: listed in its
  // sweep.tsv; with `status` "finished" its config.toml and a summary.json
  // with dev accuracy `accuracy`, "failed" only its config.toml, "missing"
  // nothing.
  fs::path add_run(const std::string& sweep, const std::string& name, const std::vector<std::string>& overrides,
                   const std::string& status, double accuracy = 0, const std::string& summary_extra = "") {
    const fs::path tsv = dir_ / sweep / "sweep.tsv";
    if (!fs::exists(tsv)) write(tsv, "index\tname\trun_dir\toverrides\n");
    std::string joined;
    for (const auto& o : overrides) joined += (joined.empty() ? "" : " ") + o;
    std::ofstream(tsv, std::ios::app) << "0\t" << name << "\t" << (dir_ / sweep / name).string() << "\t" << joined
                                      << "\n";
    const fs::path run = dir_ / sweep / name;
    if (status == "missing") return run;
    write(run / "config.toml", Config::defaults(recipe_schema(), overrides).to_toml());
    if (status == "finished")
      write(run / "summary.json",
            fmt::format(R"({{"dev": {{"accuracy": {}}}, "trainable_parameters": 1000, "nonzero_parameters": 5000,
                           "flops_dense": 800, "flops_nonzero": 600{},
                           "stages": {{"pretrained": {{"flops_dense": 1000}}}}}})",
                        accuracy, summary_extra));
    return run;
  }
  ReportTable table(const std::string& spec_text, const std::string& sweep = "sw") {
    return report_table_build(report_spec_parse(spec_text, "test spec", "t"), report_runs_find({dir_ / sweep}));
  }
  fs::path dir_;
};

const ReportCell& cell(const ReportTable& table, const std::string& row, const std::string& column,
                       const std::string& quantity) {
  for (const auto& r : table.rows)
    for (const auto& c : r.cells)
      if (r.label == row && c.column == column && c.quantity == quantity) return c;
  ADD_FAILURE() << "no cell " << row << " / " << column << " / " << quantity;
  static const ReportCell none;
  return none;
}

TEST_F(ReportTableTest, RowsAreTheKeysThatDifferWithinAColumnAndSeedsAreAveraged) {
  // Two tasks, each with its own data folder and lr (they differ only between
  // columns: no rows of their own); LoRA and DSEE at two seeds each.
  const std::vector<std::pair<std::string, std::string>> tasks = {{"sst2", "/d/sst2"}, {"rte", "/d/rte"}};
  double accuracy = 0.5;
  for (const auto& [task, data] : tasks)
    for (const std::string method : {"lora", "dsee"})
      for (const std::string seed : {"1", "2"}) {
        accuracy += 0.0625;
        add_run(
            "sw", task + "-" + method + "-" + seed,
            {"task.name=" + task, "task.data_dir=" + data, "train.lr=" + std::string(task == "rte" ? "5e-4" : "2e-4"),
             "tuning.method=" + method, "omega.c=" + std::string(method == "lora" ? "0" : "16"), "run.seed=" + seed},
            "finished", accuracy);
      }
  const auto t = table("extras = [\"trainable_parameters\", \"flops_ratio\"]\n");
  // omega.c follows the method: no row key of its own.
  EXPECT_EQ(t.row_keys, (std::vector<std::string>{"tuning.method"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0].label, "lora");
  EXPECT_EQ(t.rows[1].label, "dsee");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"sst2", "rte"}));
  EXPECT_EQ(t.metrics.at("sst2"), std::vector<std::string>{"accuracy"});
  const auto& c = cell(t, "dsee", "rte", "accuracy");
  EXPECT_EQ(c.values, (std::vector<double>{0.5 + 7 * 0.0625, 0.5 + 8 * 0.0625}));
  EXPECT_EQ(c.seeds, (std::vector<std::string>{"1", "2"}));
  const auto markdown = report_table_markdown(t);
  // mean 0.96875, sample std 0.0625 / sqrt(2) = 0.0442
  EXPECT_TRUE(contains(markdown, "| dsee | 0.719 ± 0.044 (2) | 0.969 ± 0.044 (2) | 1000 | 0.600 |")) << markdown;
  EXPECT_TRUE(contains(markdown, "| setting | sst2 (accuracy) | rte (accuracy) | trainable | FLOPs ratio |"));
  const auto csv = report_table_csv(t);
  EXPECT_TRUE(contains(csv, "row,column,quantity,mean,std,n,expected,missing,running,failed,seeds,values\n"));
  EXPECT_TRUE(contains(csv, "dsee,rte,accuracy,0.96875,0.0441941738241592")) << csv;
  EXPECT_TRUE(contains(csv, ",2,2,0,0,0,1;2,0.9375;1\n")) << csv;
  // cells: sst2 accuracy, its three extras, then rte accuracy
  EXPECT_NEAR(report_table_json(t)["rows"][1]["cells"][4]["std"].get<double>(), 0.0625 / std::sqrt(2.0), 1e-15);
  EXPECT_TRUE(contains(csv, "lora,sst2,flops_ratio,0.6,0,2,2,0,0,0,1;2,0.6;0.6\n")) << csv;
  EXPECT_FALSE(contains(csv, "nonzero_parameters"));  // not among the spec's extras
  // A spec's rows order the label, its labels rename it.
  const auto named = table("rows = [\"omega.c\"]\n[labels]\n\"c=16\" = \"DSEE (c=16)\"\n");
  EXPECT_EQ(named.rows[0].label, "c=0");
  EXPECT_EQ(named.rows[1].label, "DSEE (c=16)");
  EXPECT_EQ(report_table_json(named)["rows"][1]["cells"][0]["mean"].get<double>(), (0.6875 + 0.75) / 2);
}

TEST_F(ReportTableTest, AKeySweptWithinOneMethodMakesRows) {
  add_run("sw", "a", {"train.lr=1e-4", "tuning.method=lora"}, "finished", 0.5);
  add_run("sw", "b", {"train.lr=2e-4", "tuning.method=lora"}, "finished", 0.75);
  add_run("sw", "c", {"train.lr=2e-5", "tuning.method=full"}, "finished", 0.25);
  const auto t = table("");
  EXPECT_EQ(t.row_keys, (std::vector<std::string>{"tuning.method", "train.lr"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[1].label, "lora lr=0.0002");
  EXPECT_EQ(t.rows[2].label, "full lr=2e-05");
}

TEST_F(ReportTableTest, RowsAreGroupedByTheirKeysAndLongFootersCounted) {
  // Swept c-major (as Figure 2's sweep names its keys), printed method-major; 24 runs never started.
  int i = 0;
  for (const std::string c : {"8", "16"})
    for (const std::string method : {"grebsmo", "random"})
      for (int seed = 1; seed <= 6; ++seed)
        add_run("sw", fmt::format("{:03d}", i++),
                {"omega.c=" + c, "omega.method=" + method, fmt::format("run.seed={}", seed)}, "missing");
  const auto t = table(report_spec_builtins().back().second);
  std::vector<std::string> labels;
  for (const auto& row : t.rows) labels.push_back(row.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"omega=grebsmo c=8", "omega=grebsmo c=16", "omega=random c=8",
                                              "omega=random c=16"}));
  const auto markdown = report_table_markdown(t);
  EXPECT_TRUE(contains(markdown, "| omega=random c=16 | - (0 of 6; 6 missing) |")) << markdown;
  EXPECT_TRUE(contains(markdown, "- missing: 019 (")) << markdown;
  EXPECT_FALSE(contains(markdown, "- missing: 020 ("));
  EXPECT_TRUE(contains(markdown, "- … and 4 more missing runs\n"));
}

TEST_F(ReportTableTest, MissingRunningAndFailedRunsAreCountedNotDropped) {
  add_run("sw", "000-seed=1", {"tuning.method=lora", "run.seed=1"}, "finished", 0.75);
  add_run("sw", "001-seed=2", {"tuning.method=lora", "run.seed=2"}, "failed");
  add_run("sw", "002-seed=3", {"tuning.method=lora", "run.seed=3"}, "missing");
  const auto running = add_run("sw", "003-seed=4", {"tuning.method=lora", "run.seed=4"}, "failed");
  const int fd = ::open((running / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const auto t = table("");
  ::close(fd);
  const auto markdown = report_table_markdown(t);
  EXPECT_TRUE(contains(markdown, "| lora | 0.750 (1 of 4; 1 missing, 1 running, 1 failed) |")) << markdown;
  EXPECT_TRUE(contains(markdown, "- failed: 001-seed=2 (no summary.json and no process holds its lock"));
  EXPECT_TRUE(contains(markdown, "- missing: 002-seed=3 (listed in sweep.tsv, not started)"));
  EXPECT_TRUE(contains(markdown, "- running: 003-seed=4 (its process holds the run's lock)"));
  EXPECT_TRUE(contains(report_table_csv(t), "lora,demo,accuracy,0.75,0,1,4,1,1,1,1,0.75\n")) << report_table_csv(t);
  // The missing run's recipe comes from a started run's with its overrides: it is in the same row.
  EXPECT_EQ(t.runs[2].config.at("run.seed"), "3");
  EXPECT_EQ(t.runs[2].row, "lora");
}

TEST_F(ReportTableTest, ColumnMetricsShowWhatTheSummariesHave) {
  add_run("sw", "e2e", {"task.name=e2e", "tuning.rank=4"}, "finished", 0, R"(, "test": {"bleu": 60.5, "nist": 8.1})");
  add_run("sw", "e2e-r2", {"task.name=e2e", "tuning.rank=2"}, "finished", 0, R"(, "test": {"bleu": 61.5})");
  const auto t = table(
      "split = \"test\"\nmetrics = [\"bleu\", \"nist\", \"meteor\", \"main\"]\ndecimals = 1\n"
      "[column_metrics]\ndart = [\"ter\"]\n");
  EXPECT_EQ(t.metrics.at("e2e"), (std::vector<std::string>{"bleu", "nist"}));
  const auto markdown = report_table_markdown(t);
  EXPECT_TRUE(contains(markdown, "| setting | e2e bleu | e2e nist |")) << markdown;
  EXPECT_TRUE(contains(markdown, "| r=2 | 61.5 (1) | - (0 of 1; 1 without nist) |")) << markdown;
}

TEST_F(ReportTableTest, SpecsParseAndBadOnesSayWhatIsWrong) {
  for (const auto& [name, text] : report_spec_builtins())
    EXPECT_EQ(report_spec_load(name).name, name) << "built-in table " << name;
  EXPECT_EQ(report_spec_load("6").plot_x, "prune.heads_per_layer");
  EXPECT_TRUE(contains(error_of([] { report_spec_parse("colum = \"task.name\"\n", "my.toml", "m"); }),
                       "my.toml:1: unknown table spec key 'colum'"));
  EXPECT_TRUE(contains(error_of([] { report_spec_parse("extras = [\"flops\"]\n", "my.toml", "m"); }),
                       "my.toml: unknown extra 'flops'; the extras are trainable_parameters, nonzero_parameters, "
                       "flops_ratio"));
  EXPECT_TRUE(contains(error_of([] { report_spec_parse("metrics = \"bleu\"\n", "my.toml", "m"); }),
                       "my.toml:1: metrics must be a list of strings"));
  EXPECT_TRUE(contains(error_of([] { report_spec_load("8"); }),
                       "--table 8: neither a built-in table (1, 2, 3, 4, 5, 6, 7, 9, fig2) nor a spec file"));
  EXPECT_TRUE(contains(error_of([&] { report_runs_find({dir_}); }), "holds no sweep.tsv and no run directory"));
}

TEST_F(ReportTableTest, CommandLine) {
  add_run("sw", "a", {"tuning.method=lora", "run.seed=1"}, "finished", 0.5);
  add_run("sw", "b", {"tuning.method=lora", "run.seed=2"}, "finished", 0.75);
  const auto sw = (dir_ / "sw").string();
  const auto csv = run_dsee("report --table 1 --format csv " + sw + " --out " + (dir_ / "out").string());
  ASSERT_EQ(csv.exit_code, 0) << csv.output;
  EXPECT_TRUE(contains(csv.output, "lora,demo,accuracy,0.625,"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "table-1.csv"));
  EXPECT_TRUE(contains(run_dsee("report --format csv " + sw).output, "--format csv needs --table"));
  EXPECT_TRUE(contains(run_dsee("report --table 1 --format tsv " + sw).output,
                       "--format tsv is not a table format; with --table the formats are markdown, csv and json"));
  EXPECT_TRUE(contains(run_dsee("report --plot " + sw).output, "--plot, --out and --split need --table"));
  // --split picks the summaries' other scores: Table 2 reads "test" (the paper's GPT-2 split), --split dev "dev".
  add_run("nlg", "e2e-1", {"task.name=e2e", "run.seed=1"}, "finished", 0, R"(, "test": {"bleu": 61.5})");
  const auto nlg = (dir_ / "nlg").string();
  EXPECT_TRUE(contains(run_dsee("report --table 2 --format csv " + nlg).output, ",e2e,bleu,61.5"));
  const auto dev = run_dsee("report --table 2 --format csv --split dev " + nlg);
  EXPECT_FALSE(contains(dev.output, "61.5")) << dev.output;
  EXPECT_TRUE(contains(run_dsee("report --table 2 --split valid " + nlg).output, "--split: valid not in {dev,test}"));
  // --plot without a usable Python: the table, then an error saying what --plot needs.
  const auto no_python = run_dsee("report --table 1 --plot " + sw, "DSEE_PYTHON=/nonexistent/python ");
  EXPECT_EQ(no_python.exit_code, 1);
  EXPECT_TRUE(contains(no_python.output, "| lora |"));
  EXPECT_TRUE(contains(no_python.output, "it needs the project's Python with matplotlib")) << no_python.output;
  // Without --table: the summaries' values as before.
  EXPECT_TRUE(contains(run_dsee("report --format tsv " + sw).output, "run\tdev.accuracy\t"));
}

}  // namespace
}  // namespace dsee
