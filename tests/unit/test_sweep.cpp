// Sweeps: expansion of [grid]/[zip] lists into named runs with --set
// overrides, errors before any run starts, sequential execution through the
// real dsee binary, Slurm array submission, and `dsee report`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "error_of.h"
#include "recipes/sweep.h"
#include "run_dsee.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using dsee_test::run_dsee;

class SweepTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsee-sweep-" + std::to_string(getpid()) + "-" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    write("base.toml", "[run]\nname = \"base\"\n[train]\nepochs = 2\n");
  }
  // POSIX removal: std::filesystem::remove_all crashes next to libtorch.
  void TearDown() override { std::system(("rm -rf '" + dir_.string() + "'").c_str()); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  static std::string read(const fs::path& path) {
    std::stringstream text;
    text << std::ifstream(path).rdbuf();
    return text.str();
  }
  fs::path dir_;
};

TEST_F(SweepTest, GridTimesZipInFixedOrderWithDistinctRunDirectories) {
  const auto file =
      write("s.toml", "recipe = \"base.toml\"\nout_dir = \"" + (dir_ / "runs").string() +
                          "\"\n[grid]\n\"train.lr\" = [1e-4, 3e-4]\n[grid.train]\nbatch_size = [8, 16, 32]\n"
                          "[zip]\n\"run.seed\" = [1, 2]\n\"run.device\" = [\"cpu\", \"auto\"]\n");
  const Sweep sweep = sweep_load(file);
  EXPECT_EQ(sweep.name, "s");
  ASSERT_EQ(sweep.runs.size(), 2u * 3 * 2);
  // Grid keys sorted (train.batch_size, train.lr), zip tuple last, last fastest.
  EXPECT_EQ(sweep.runs[0].name, "000-batch_size=8-lr=0.0001-device=cpu-seed=1");
  EXPECT_EQ(sweep.runs[1].name, "001-batch_size=8-lr=0.0001-device=auto-seed=2");
  EXPECT_EQ(sweep.runs[2].name, "002-batch_size=8-lr=0.0003-device=cpu-seed=1");
  EXPECT_EQ(sweep.runs[11].name, "011-batch_size=32-lr=0.0003-device=auto-seed=2");
  EXPECT_EQ(sweep.runs[11].run_dir, dir_ / "runs" / "s" / sweep.runs[11].name);
  EXPECT_THAT(sweep.runs[11].overrides,
              testing::ElementsAre("run.out_dir=" + (dir_ / "runs" / "s").string(), "run.name=" + sweep.runs[11].name,
                                   "train.batch_size=32", "train.lr=0.0003", "run.device=auto", "run.seed=2"));
}

TEST_F(SweepTest, BadSweepsFailBeforeAnyRunNamingTheProblem) {
  const auto bad = [&](const std::string& body) {
    return error_of([&] { sweep_load(write("bad.toml", "recipe = \"base.toml\"\n" + body)); });
  };
  EXPECT_TRUE(contains(bad("[grid]\n\"train.lrr\" = [1]\n"), "'train.lrr' is not a recipe key"));
  EXPECT_TRUE(contains(bad("[zip]\n\"run.seed\" = [1, 2]\n\"train.lr\" = [0.1]\n"), "equal lengths"));
  EXPECT_TRUE(contains(bad("[grid]\n\"train.lr\" = []\n"), "non-empty list"));
  EXPECT_TRUE(contains(bad("[grid]\n\"train.lr\" = [5.0]\n"), "run 0"));  // out of the schema's range
  EXPECT_TRUE(contains(bad("[grid]\n\"run.name\" = [\"a\"]\n"), "set by the sweep itself"));
  EXPECT_TRUE(contains(bad("[grid]\n"), "nothing to sweep"));
  EXPECT_TRUE(contains(bad("colour = 1\n[grid]\n\"train.lr\" = [0.1]\n"), "unknown sweep key 'colour'"));
  EXPECT_TRUE(
      contains(error_of([&] { sweep_load(write("n.toml", "[grid]\n\"train.lr\" = [0.1]\n")); }), "needs recipe ="));
}

TEST_F(SweepTest, ZipGroupsAreAxesOfTheirOwnAndOverridesReachEveryRun) {
  // Two [[zip]] groups (a task with its data folder; a method with its rank)
  // after a grid key: 2 seeds x 2 tasks x 2 methods, the groups in file order.
  const auto file = write("t.toml", "recipe = \"base.toml\"\nout_dir = \"" + (dir_ / "runs").string() +
                                        "\"\n[grid]\n\"run.seed\" = [1, 2]\n"
                                        "[[zip]]\n\"task.name\" = [\"rte\", \"sst2\"]\n"
                                        "\"task.data_dir\" = [\"${paths.data}/RTE\", \"${paths.data}/SST-2\"]\n"
                                        "[[zip]]\n\"tuning.method\" = [\"lora\", \"dsee\"]\n"
                                        "\"tuning.rank\" = [16, 8]\n");
  const Sweep sweep = sweep_load(file, {"paths.data=/scratch/glue"});
  ASSERT_EQ(sweep.runs.size(), 8u);
  EXPECT_EQ(sweep.runs[0].name, "000-seed=1-name=rte-method=lora-rank=16");
  EXPECT_EQ(sweep.runs[3].name, "003-seed=1-name=sst2-method=dsee-rank=8");
  EXPECT_THAT(sweep.runs[3].overrides,
              testing::ElementsAre("paths.data=/scratch/glue", "run.out_dir=" + (dir_ / "runs" / "t").string(),
                                   "run.name=" + sweep.runs[3].name, "run.seed=1", "task.data_dir=${paths.data}/SST-2",
                                   "task.name=sst2", "tuning.method=dsee", "tuning.rank=8"));
  // The run's recipe resolves the reference against the sweep's override.
  const auto resolved = run_dsee("config '" + (dir_ / "base.toml").string() + "' --set '" + sweep.runs[3].overrides[0] +
                                 "' --set '" + sweep.runs[3].overrides[4] + "'");
  EXPECT_EQ(resolved.exit_code, 0) << resolved.output;
  EXPECT_TRUE(contains(resolved.output, "data_dir = \"/scratch/glue/SST-2\"")) << resolved.output;

  // --set run.out_dir moves the sweep's folder; the runs keep their own names in it.
  const Sweep moved = sweep_load(file, {"run.out_dir=" + (dir_ / "elsewhere").string()});
  EXPECT_EQ(moved.out_dir, dir_ / "runs" / "t");  // the file's out_dir wins over the base recipe's
  const Sweep plain = sweep_load(write("u.toml", "recipe = \"base.toml\"\n[grid]\n\"run.seed\" = [1]\n"),
                                 {"run.out_dir=" + (dir_ / "elsewhere").string()});
  EXPECT_EQ(plain.out_dir, dir_ / "elsewhere" / "u");
  EXPECT_EQ(plain.runs[0].run_dir, dir_ / "elsewhere" / "u" / "000-seed=1");
  EXPECT_EQ(plain.runs[0].overrides[1], "run.out_dir=" + (dir_ / "elsewhere" / "u").string());

  const auto bad = [&](const std::string& body, const std::vector<std::string>& overrides = {}) {
    return error_of([&] { sweep_load(write("bad.toml", "recipe = \"base.toml\"\n" + body), overrides); });
  };
  EXPECT_TRUE(contains(bad("[[zip]]\n\"train.lr\" = [0.1]\n[[zip]]\n\"train.lr\" = [0.2]\n"),
                       "'train.lr' is swept twice: in [zip 1] and [zip 2]"));
  EXPECT_TRUE(contains(bad("[[zip]]\n\"run.seed\" = [1]\n[[zip]]\n\"train.lr\" = [0.1, 0.2]\n\"train.epochs\" = [1]\n"),
                       "[zip 2] lists must have equal lengths"));
  EXPECT_TRUE(contains(bad("[grid]\n\"train.lr\" = [0.1]\n", {"train.lr=0.2"}), "'train.lr' is swept by the file"));
  EXPECT_TRUE(contains(bad("[grid]\n\"train.lr\" = [0.1]\n", {"train.lrr=0.2"}), "train.lrr"));
}

TEST_F(SweepTest, SequentialRunsExecuteEachCommandThroughDsee) {
  // command = "config": each run prints its resolved recipe, a real
  // execution of the expanded command line without training anything.
  const auto file = write("s.toml", "recipe = \"base.toml\"\ncommand = \"config\"\nout_dir = \"" +
                                        (dir_ / "runs").string() + "\"\n[grid]\n\"train.epochs\" = [3, 7]\n");
  const auto r = run_dsee("sweep " + file.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "[1/2] 000-epochs=3"));
  EXPECT_TRUE(contains(r.output, "epochs = 3"));
  EXPECT_TRUE(contains(r.output, "epochs = 7"));
  EXPECT_TRUE(contains(r.output, "name = \"001-epochs=7\""));
  const auto tsv = read(dir_ / "runs" / "s" / "sweep.tsv");
  EXPECT_TRUE(contains(tsv, "1\t001-epochs=7\t")) << tsv;
  EXPECT_TRUE(contains(read(dir_ / "runs" / "s" / "sweep.commands"), "'--set' 'train.epochs=7'"));
}

TEST_F(SweepTest, FailedRunStopsTheSweepUnlessKeepGoing) {
  // An unknown subcommand fails every run.
  const auto file = write("s.toml", "recipe = \"base.toml\"\ncommand = \"no-such-command\"\nout_dir = \"" +
                                        (dir_ / "runs").string() + "\"\n[grid]\n\"train.epochs\" = [3, 7]\n");
  auto r = run_dsee("sweep " + file.string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "sweep stopped at run 0"));
  EXPECT_FALSE(contains(r.output, "[2/2]"));
  r = run_dsee("sweep --keep-going " + file.string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "[2/2]"));
  EXPECT_TRUE(contains(r.output, "2 of 2 runs failed"));
}

TEST_F(SweepTest, SlurmSubmitsOneArrayJob) {
  const auto file = write("s.toml", "recipe = \"base.toml\"\nout_dir = \"" + (dir_ / "runs").string() +
                                        "\"\n[zip]\n\"run.seed\" = [1, 2, 3]\n");
  // A stand-in sbatch on PATH records its arguments.
  fs::create_directories(dir_ / "bin");
  write("bin/sbatch", "#!/bin/sh\necho \"$@\" > \"" + (dir_ / "sbatch.args").string() + "\"\necho Submitted 42\n");
  fs::permissions(dir_ / "bin" / "sbatch", fs::perms::owner_all);
  const auto r = run_dsee("sweep --slurm --sbatch-arg=--partition=gpu " + file.string(),
                          "PATH=" + (dir_ / "bin").string() + ":$PATH ");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "Submitted 42"));
  const auto script = dir_ / "runs" / "s" / "sweep.sbatch";
  EXPECT_EQ(read(dir_ / "sbatch.args"), "--partition=gpu " + script.string() + "\n");
  EXPECT_TRUE(contains(read(script), "#SBATCH --array=0-2"));
  EXPECT_TRUE(contains(read(script), "--requeue"));
}

TEST_F(SweepTest, ReportTabulatesSummaries) {
  fs::create_directories(dir_ / "sw" / "000-lr=0.1");
  fs::create_directories(dir_ / "sw" / "001-lr=0.2");
  fs::create_directories(dir_ / "sw" / "002-lr=0.3");  // unfinished: no summary
  write("sw/000-lr=0.1/summary.json", R"({"dev": {"accuracy": 0.75}, "trainable_parameters": 1000})");
  write("sw/001-lr=0.2/summary.json", R"({"dev": {"accuracy": 0.5}, "trainable_parameters": 1000})");
  const auto r = run_dsee("report --format tsv " + (dir_ / "sw").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "run\tdev.accuracy\ttrainable_parameters\n000-lr=0.1\t0.75\t1000\n001-lr=0.2\t0.5\t1000\n");
  // A run.compare folder: its summary.json lists the arms, which are rows of their own.
  fs::create_directories(dir_ / "cmp" / "lora");
  write("cmp/summary.json", R"({"arms": [{"name": "lora", "summary": {"dev": {"accuracy": 0.5}}}]})");
  write("cmp/lora/summary.json", R"({"dev": {"accuracy": 0.5}})");
  const auto compare = run_dsee("report --format tsv " + (dir_ / "cmp").string());
  ASSERT_EQ(compare.exit_code, 0) << compare.output;
  EXPECT_EQ(compare.output, "run\tdev.accuracy\nlora\t0.5\n");
  write("sw/002-lr=0.3/summary.json", "{not json");
  EXPECT_TRUE(contains(run_dsee("report " + (dir_ / "sw").string()).output, "002-lr=0.3/summary.json: not valid JSON"));
}

}  // namespace
}  // namespace dsee
