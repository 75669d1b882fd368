// The data-to-text tasks in the pipeline's recipe (recipes/recipe.h,
// recipes/task_data.h): the shipped GPT-2 recipes parse to the settings their
// comments give, the trainer runs them as a causal LM, and a recipe that
// cannot run is refused with the key to set. End to end against transformers
// and sacrebleu: tests/parity/test_nlg_run.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/train/nlg_scores.h"
#include "error_of.h"
#include "recipes/pipeline.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"
#include "recipes/task_data.h"

namespace dsee {
namespace {

Recipe shipped(const std::string& name) {
  return recipe_load(std::string(DSEE_SOURCE_DIR) + "/recipes/" + name + "-gpt2-medium-dsee.toml");
}

TEST(NlgPipeline, ShippedRecipesHoldLorasSettings) {
  for (const std::string task : {"e2e", "webnlg", "dart"}) {
    SCOPED_TRACE(task);
    const Recipe recipe = shipped(task);
    EXPECT_EQ(recipe.task.name, task);
    EXPECT_TRUE(recipe_is_nlg(recipe));
    EXPECT_EQ(recipe.task.max_seq_length, 512);
    EXPECT_EQ(recipe.tuning.rank, 4);
    EXPECT_EQ(recipe.tuning.alpha, 32.0);
    EXPECT_EQ(recipe.tuning.target_modules, (std::vector<std::string>{"c_attn:q", "c_attn:v"}));
    EXPECT_EQ(recipe.run.seed, 110);
    EXPECT_EQ(recipe.eval.beam_size, 10);
    EXPECT_EQ(recipe.eval.no_repeat_ngram_size, 4);
    EXPECT_EQ(recipe.eval.max_new_tokens, 64);
    EXPECT_EQ(recipe.eval.length_penalty, task == "e2e" ? 0.9 : 0.8);
    const TrainerOptions options = recipe_trainer_options(recipe, Stage::train);
    EXPECT_TRUE(options.causal_lm);
    EXPECT_EQ(options.label_smoothing, task == "dart" ? 0.0 : 0.1);
    EXPECT_EQ(options.adamw.weight_decay, task == "dart" ? 0.0 : 0.01);
    EXPECT_EQ(recipe.tuning.dropout, task == "dart" ? 0.0 : 0.1);
    EXPECT_EQ(options.adamw.eps, 1e-6);
    EXPECT_EQ(options.schedule.warmup_steps, 500);
    EXPECT_EQ(options.max_grad_norm, 0.0);
    EXPECT_EQ(options.metric_for_best, "bleu");
  }
  EXPECT_EQ(task_metric_names("e2e"), (std::vector<std::string>{"bleu", "nist", "rouge_l", "cider", "ter"}));
}

TEST(NlgPipeline, ClassificationTasksAreNoCausalLm) {
  const Recipe recipe = recipe_load(std::string(DSEE_SOURCE_DIR) + "/recipes/demo.toml");
  EXPECT_FALSE(recipe_trainer_options(recipe, Stage::train).causal_lm);
  EXPECT_TRUE(contains(error_of([&] {
                         recipe_trainer_options(recipe_with_overrides(recipe, "demo", {"train.label_smoothing=0.1"}),
                                                Stage::train);
                       }),
                       "train.label_smoothing = 0.1 applies to the data-to-text tasks (e2e, webnlg, dart) only"));
}

TEST(NlgPipeline, RecipesThatCannotRunNameTheKey) {
  const std::string out = "/tmp/dsee-nlg-pipeline-" + std::to_string(::getpid());
  int runs = 0;
  const auto fails_with = [&](const std::vector<std::string>& overrides) {
    std::vector<std::string> all = {"task.name=e2e", "run.out_dir=" + out + "/" + std::to_string(++runs)};
    all.insert(all.end(), overrides.begin(), overrides.end());
    return error_of([&] { pipeline_run(recipe_from_config(Config::defaults(recipe_schema(), all))); });
  };
  EXPECT_TRUE(contains(fails_with({}), "task.name = e2e needs model.path: a GPT-2 model folder"));
  EXPECT_TRUE(contains(fails_with({"model.path=/nonexistent"}),
                       "task.name = e2e needs task.data_dir: the folder of the dataset's files (train.txt and "
                       "valid.txt"));
  EXPECT_TRUE(contains(fails_with({"model.path=/nonexistent", "task.data_dir=/nonexistent", "task.max_seq_length=64"}),
                       "task.max_seq_length = 64 leaves no room for the prompt"));
  std::system(("rm -rf '" + out + "'").c_str());
}

// WebNLG's scores split by category: every metric over all contexts, over
// the seen and over the unseen ones, each as score_corpus gives it for that
// subset; other tasks report the overall scores only.
TEST(NlgPipeline, WebnlgScoresSplitIntoSeenAndUnseen) {
  TaskData data;
  data.task = "webnlg";
  data.causal_lm = true;
  data.dev.push_back({"dev", {}});
  data.nlg = std::make_shared<NlgTaskData>();
  NlgDevSplit split;
  split.items = {{"a : b : c", {"the b of a is c .", "a has b c ."}, "Airport", true},
                 {"d : e : f", {"d is e of f ."}, "Athlete", false},
                 {"g : h : i", {"g h i .", "i is the h of g ."}, "City", true}};
  data.nlg->dev.push_back(split);
  const std::vector<std::vector<std::string>> hypotheses = {{"the b of a is c .", "f is e of d .", "g h i ."}};
  const auto scores = task_nlg_metrics(data, hypotheses);
  const auto subset = [&](std::vector<std::size_t> rows) {
    std::vector<TextItem> items;
    for (std::size_t row : rows) items.push_back({hypotheses[0][row], split.items[row].references});
    return score_corpus(items, native_metric_names());
  };
  const auto all = subset({0, 1, 2}), seen = subset({0, 2}), unseen = subset({1});
  for (const auto& name : native_metric_names()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(scores.at(name), all.at(name));
    EXPECT_EQ(scores.at(name + "_seen"), seen.at(name));
    EXPECT_EQ(scores.at(name + "_unseen"), unseen.at(name));
  }
  EXPECT_NE(scores.at("bleu_seen"), scores.at("bleu_unseen"));
  data.task = "dart";
  EXPECT_EQ(task_nlg_metrics(data, hypotheses).size(), native_metric_names().size());
}

}  // namespace
}  // namespace dsee
