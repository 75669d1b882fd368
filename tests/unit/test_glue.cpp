// GLUE readers (data/glue.h): files in the distribution's layouts are read
// with literal quotes, CRLF and the MRPC byte-order mark; malformed files are
// refused with the file, line, column and what was expected; the GLUE recipe
// example parses; a GLUE recipe without model.path is refused by `dsee run`'s
// pipeline. Encoding parity with transformers: tests/parity/test_glue.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "data/glue.h"
#include "error_of.h"
#include "recipes/pipeline.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"
#include "recipes/task_data.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

class Glue : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsee-glue-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { std::system(("rm -rf '" + dir_.string() + "'").c_str()); }
  fs::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  fs::path dir_;
};

TEST_F(Glue, ReadsEveryLayout) {
  const auto cola = glue_read("CoLA", write("cola.tsv", "gj04\t1\t\tOur \"friends\" won't buy it.\nc\t0\t*\tx y\n"));
  EXPECT_EQ(cola.first, (std::vector<std::string>{"Our \"friends\" won't buy it.", "x y"}));
  EXPECT_TRUE(cola.second.empty());
  EXPECT_EQ(cola.labels, (std::vector<std::int64_t>{1, 0}));

  const auto mrpc = glue_read("mrpc", write("mrpc.tsv",
                                            "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                                            "1\t7\t8\tcafé \"a\"\t\r\n\r\n0\t9\t10\tb\tc\r\n"));
  EXPECT_EQ(mrpc.first, (std::vector<std::string>{"café \"a\"", "b"}));
  EXPECT_EQ(mrpc.second, (std::vector<std::string>{"", "c"}));
  EXPECT_EQ(mrpc.labels, (std::vector<std::int64_t>{1, 0}));

  const auto mnli = glue_read("MNLI", write("mnli.tsv",
                                            "index\tsentence1\tsentence2\tlabel1\tgold_label\n"
                                            "0\ta\tb\tneutral\tcontradiction\n1\tc\td\tx\tentailment\n"
                                            "2\te\tf\tx\tneutral\n"));
  EXPECT_EQ(mnli.labels, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(glue_file_spec("mnli").dev_files, (std::vector<std::string>{"dev_matched.tsv", "dev_mismatched.tsv"}));

  const auto rte = glue_read("rte", write("rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n"));
  EXPECT_EQ(rte.labels, (std::vector<std::int64_t>{1}));

  const auto stsb = glue_read("STS-B", write("stsb.tsv", "sentence1\tsentence2\tscore\na\tb\t3.800\nc\td\t0\n"));
  EXPECT_EQ(stsb.scores, (std::vector<float>{3.8f, 0.0f}));
  EXPECT_TRUE(stsb.labels.empty());
  EXPECT_EQ(glue_file_spec("sts-b").num_labels, 1);
}

TEST_F(Glue, MalformedFilesNameFileLineAndColumn) {
  const auto wrong_count = write("a.tsv", "sentence\tlabel\ngood\t1\nbad\t1\textra\n");
  auto e = error_of([&] { glue_read("sst2", wrong_count); });
  EXPECT_TRUE(contains(e, wrong_count.string() + ": line 3: 3 tab-separated fields, the sst2 file has 2 columns")) << e;

  const auto cola = write("cola.tsv", "s\t1\t\tfine\ns\t1\tno mark column\n");
  e = error_of([&] { glue_read("cola", cola); });
  EXPECT_TRUE(contains(e, cola.string() + ": line 2: 3 tab-separated fields")) << e;
  EXPECT_TRUE(contains(e, "source, label, original mark, sentence; no header")) << e;

  const auto missing = write("b.tsv", "index\tquestion\tsentence\n0\ta\tb\n");
  e = error_of([&] { glue_read("qnli", missing); });
  EXPECT_TRUE(contains(e, missing.string() + ": line 1: the qnli header has no column 'label'")) << e;

  const auto label = write("c.tsv", "index\tsentence1\tsentence2\tlabel1\tgold_label\n0\ta\tb\tx\tmaybe\n");
  e = error_of([&] { glue_read("mnli", label); });
  EXPECT_TRUE(contains(e, label.string() + ": line 2: column 'gold_label' (column 5): unknown label 'maybe'")) << e;
  EXPECT_TRUE(contains(e, "contradiction, entailment, neutral")) << e;

  const auto score = write("d.tsv", "sentence1\tsentence2\tscore\na\tb\t3.8x\n");
  e = error_of([&] { glue_read("stsb", score); });
  EXPECT_TRUE(contains(e, score.string() + ": line 2: column 'score' (column 3): '3.8x' is not a number")) << e;

  e = error_of([&] { glue_read("sst2", write("e.tsv", "")); });
  EXPECT_TRUE(contains(e, "the file is empty; expected the sst2 header line")) << e;
  e = error_of([&] { glue_read("sst2", dir_ / "absent.tsv"); });
  EXPECT_TRUE(contains(e, "cannot open sst2 file")) << e;
  e = error_of([&] { glue_file_spec("squad"); });
  EXPECT_TRUE(contains(e, "unknown GLUE task 'squad'; the tasks are cola, sst2")) << e;
}

TEST(GlueTasks, MainMetrics) {
  EXPECT_EQ(task_main_metric("demo"), "accuracy");
  EXPECT_EQ(task_main_metric("cola"), "mcc");
  EXPECT_EQ(task_main_metric("mrpc"), "f1");
  EXPECT_EQ(task_main_metric("stsb"), "pearson");
  EXPECT_EQ(task_main_metric("mnli"), "accuracy");
  EXPECT_EQ(task_metric_names("mnli"), (std::vector<std::string>{"accuracy", "accuracy_mismatched"}));
  EXPECT_EQ(task_metric_names("qqp"), (std::vector<std::string>{"accuracy", "f1"}));
}

TEST(GlueTasks, RecipeExampleParses) {
  const auto config = Config::load(recipe_schema(), std::string(DSEE_SOURCE_DIR) + "/recipes/glue-sst2-bert-base.toml");
  EXPECT_EQ(config.get_string("task.name"), "sst2");
  EXPECT_EQ(config.get_int("task.max_seq_length"), 128);
  EXPECT_EQ(config.get_int("tuning.rank"), 16);
  EXPECT_EQ(config.get_float("tuning.alpha"), 32.0);
  EXPECT_EQ(config.get_int("omega.c"), 16);
  EXPECT_EQ(config.get_int("train.batch_size"), 32);
  EXPECT_EQ(config.get_float("train.lr"), 2e-4);
  EXPECT_EQ(config.get_int("train.epochs"), 5);
}

TEST_F(Glue, PipelineNeedsModelPathAndDataDir) {
  const auto out = dir_ / "runs";
  auto config = Config::defaults(recipe_schema(), {"task.name=sst2", "run.out_dir=" + out.string()});
  auto e = error_of([&] { pipeline_run(recipe_from_config(config)); });
  EXPECT_TRUE(contains(e, "task.name = sst2 needs model.path")) << e;
  config = Config::defaults(recipe_schema(),
                            {"task.name=rte", "run.out_dir=" + out.string(), "run.name=b", "model.path=/nowhere"});
  e = error_of([&] { pipeline_run(recipe_from_config(config)); });
  EXPECT_TRUE(contains(e, "task.name = rte needs task.data_dir")) << e;
}

}  // namespace
}  // namespace dsee
