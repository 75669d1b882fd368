// The data-to-text tasks in the pipeline's recipe (recipes/recipe.h,
// recipes/task_data.h): the shipped GPT-2 recipes parse to the settings their
// comments give, the trainer runs them as a causal LM, and a recipe that
// cannot run is refused with the key to set; eval.splits; the length-bucketed
// training batches (rank shards, resuming mid-epoch). End to end against
// transformers and sacrebleu: tests/parity/test_nlg_run.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>

#include "core/train/nlg_scores.h"
#include "data/nlg_encoding.h"
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
    EXPECT_EQ(recipe.eval.splits, (std::vector<std::string>{"dev", "test"}));
    EXPECT_EQ(recipe.task.test_file, task == "e2e"      ? "test.txt"
                                     : task == "webnlg" ? "test.json"
                                                        : "dart-v1.1.1-full-test.json");
    EXPECT_TRUE(recipe.train.length_buckets);
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
  EXPECT_TRUE(
      contains(fails_with({"model.path=/nonexistent", "task.data_dir=/nonexistent", "eval.splits=[\"dev\", \"test\"]"}),
               "eval.splits lists \"test\" but task.test_file is empty"));
  std::system(("rm -rf '" + out + "'").c_str());
}

TEST(NlgPipeline, EvalSplitsAreDevThenTestOnDataToTextTasks) {
  const auto splits = [](const std::vector<std::string>& overrides) {
    return recipe_from_config(Config::defaults(recipe_schema(), overrides)).eval.splits;
  };
  EXPECT_EQ(splits({}), (std::vector<std::string>{"dev"}));
  EXPECT_EQ(splits({"task.name=dart", "eval.splits=[\"dev\", \"test\"]"}), (std::vector<std::string>{"dev", "test"}));
  EXPECT_TRUE(recipe_evaluates_test(
      recipe_from_config(Config::defaults(recipe_schema(), {"task.name=e2e", "eval.splits=[\"dev\", \"test\"]"}))));
  EXPECT_TRUE(contains(error_of([&] {
                         splits({"task.name=e2e", "eval.splits=[\"test\"]"});
                       }),
                       "eval.splits = [test]: give [\"dev\"] or [\"dev\", \"test\"]"));
  EXPECT_TRUE(contains(error_of([&] {
                         splits({"task.name=e2e", "eval.splits=[\"dev\", \"train\"]"});
                       }),
                       "eval.splits = [dev, train]"));
  EXPECT_TRUE(contains(error_of([&] {
                         splits({"task.name=sst2", "eval.splits=[\"dev\", \"test\"]"});
                       }),
                       "eval.splits lists \"test\", which task.name = sst2 has not"));
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
  NlgSplit split;
  split.name = "dev";
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

// A data-to-text training split of n rows whose lengths are drawn from
// `seed`: row i holds the id i on each of its tokens (so a batch names its
// rows) and is right-padded with attention_mask 0.
TaskSplit rows_of_lengths(std::int64_t n, std::uint64_t seed, std::vector<std::int64_t>& lengths) {
  lengths.clear();
  std::uint64_t state = seed;
  for (std::int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    lengths.push_back(1 + static_cast<std::int64_t>((state >> 33) % 20));
  }
  const std::int64_t width = *std::max_element(lengths.begin(), lengths.end());
  TaskSplit split;
  split.name = "train";
  at::Tensor ids = at::zeros({n, width}, at::kLong), mask = at::zeros({n, width}, at::kLong);
  for (std::int64_t i = 0; i < n; ++i) {
    ids[i].narrow(0, 0, lengths[static_cast<std::size_t>(i)]).fill_(i);
    mask[i].narrow(0, 0, lengths[static_cast<std::size_t>(i)]).fill_(1);
  }
  split.tensors = {{"input_ids", ids}, {"attention_mask", mask}, {"labels", ids.clone()}};
  return split;
}

// The rows of a batch (its first column, see rows_of_lengths).
std::vector<std::int64_t> rows_in(const TrainBatch& batch) {
  const at::Tensor first = batch.tensors.at("input_ids").select(1, 0).contiguous();
  return {first.data_ptr<std::int64_t>(), first.data_ptr<std::int64_t>() + first.numel()};
}

constexpr TaskBatchShape kBuckets{.trim_padding = true, .length_buckets = true};

// With length buckets an epoch's batches are nlg_length_batches of the rows'
// lengths for the sampler's (seed, epoch), each cut to its longest row.
TEST(NlgPipeline, LengthBucketedBatchesAreTheEpochsNlgLengthBatches) {
  std::vector<std::int64_t> lengths;
  const TaskSplit split = rows_of_lengths(37, 3, lengths);
  TaskBatches batches(split, 4, 7, 0, 1, kBuckets);
  EXPECT_EQ(batches.batches_per_epoch(), 10);
  const auto expected = nlg_length_batches(lengths, 4, 7, 1);
  batches.start_epoch(1);
  std::size_t k = 0;
  while (const auto batch = batches.next()) {
    ASSERT_LT(k, expected.size());
    EXPECT_EQ(rows_in(*batch), expected[k]);
    std::int64_t longest = 0;
    for (const auto row : expected[k]) longest = std::max(longest, lengths[static_cast<std::size_t>(row)]);
    EXPECT_EQ(batch->tensors.at("input_ids").size(1), longest);
    EXPECT_EQ(batch->samples, static_cast<std::int64_t>(expected[k].size()));
    ++k;
  }
  EXPECT_EQ(k, expected.size());
  // Sorted within pools, so less padding than the same epoch without buckets.
  TaskBatches shuffled(split, 4, 7, 0, 1, {.trim_padding = true});
  shuffled.start_epoch(1);
  std::vector<std::vector<std::int64_t>> plain;
  while (const auto batch = shuffled.next()) plain.push_back(rows_in(*batch));
  EXPECT_LT(nlg_padding_count(lengths, expected, 64).padded, nlg_padding_count(lengths, plain, 64).padded);
}

// On 2 ranks each global batch is split into contiguous pieces, rank 0's
// first: the ranks' batches are disjoint and together the 1-rank epoch.
TEST(NlgPipeline, LengthBucketedBatchesSplitOverRanksCoverTheEpoch) {
  std::vector<std::int64_t> lengths;
  const TaskSplit split = rows_of_lengths(37, 3, lengths);
  TaskBatches one(split, 4, 7, 0, 1, kBuckets), rank0(split, 4, 7, 0, 2, kBuckets), rank1(split, 4, 7, 1, 2, kBuckets);
  EXPECT_EQ(rank0.batches_per_epoch(), one.batches_per_epoch());
  EXPECT_EQ(rank1.batches_per_epoch(), one.batches_per_epoch());
  for (auto* batches : {&one, &rank0, &rank1}) batches->start_epoch(2);
  std::vector<std::int64_t> seen;
  while (const auto whole = one.next()) {
    const auto a = rank0.next(), b = rank1.next();
    ASSERT_TRUE(a && b);
    auto joined = rows_in(*a);
    const auto second = rows_in(*b);
    EXPECT_EQ(static_cast<std::int64_t>(joined.size()) - static_cast<std::int64_t>(second.size()),
              static_cast<std::int64_t>(rows_in(*whole).size() % 2));
    joined.insert(joined.end(), second.begin(), second.end());
    EXPECT_EQ(joined, rows_in(*whole));
    seen.insert(seen.end(), joined.begin(), joined.end());
  }
  EXPECT_FALSE(rank0.next() || rank1.next());
  std::sort(seen.begin(), seen.end());
  std::vector<std::int64_t> all(37);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(seen, all);
}

// A checkpoint's position (epoch, global samples consumed) resumes the
// epoch's remaining batches bit for bit, after the epoch's short batch too,
// on 1 rank and on 2; a position inside a batch is refused.
TEST(NlgPipeline, LengthBucketedBatchesResumeMidEpochBitIdentical) {
  std::vector<std::int64_t> lengths;
  const TaskSplit split = rows_of_lengths(37, 3, lengths);
  const auto expected = nlg_length_batches(lengths, 4, 9, 3);
  std::size_t after = 0;  // resume right after the short batch (before the last batch if it is last)
  while (expected[after].size() == 4) ++after;
  after = after + 1 < expected.size() ? after + 1 : after;
  ASSERT_GT(after, 0u);

  TaskBatches straight(split, 4, 9, 0, 1, kBuckets);
  straight.start_epoch(3);
  for (std::size_t k = 0; k < after; ++k) ASSERT_TRUE(straight.next());
  const std::int64_t position = straight.sample_index();
  std::int64_t consumed = 0;
  for (std::size_t k = 0; k < after; ++k) consumed += static_cast<std::int64_t>(expected[k].size());
  EXPECT_EQ(position, consumed);
  std::vector<TrainBatch> rest;
  while (auto batch = straight.next()) rest.push_back(std::move(*batch));

  TaskBatches resumed(split, 4, 9, 0, 1, kBuckets);
  resumed.seek(3, position);
  EXPECT_EQ(resumed.sample_index(), position);
  for (const auto& batch : rest) {
    const auto again = resumed.next();
    ASSERT_TRUE(again);
    for (const auto& [name, tensor] : batch.tensors) EXPECT_TRUE(at::equal(again->tensors.at(name), tensor)) << name;
  }
  EXPECT_FALSE(resumed.next());

  TaskBatches rank0(split, 4, 9, 0, 2, kBuckets), rank1(split, 4, 9, 1, 2, kBuckets);
  rank0.seek(3, position);
  rank1.seek(3, position);
  for (const auto& batch : rest) {
    auto joined = rows_in(*rank0.next());
    const auto second = rows_in(*rank1.next());
    joined.insert(joined.end(), second.begin(), second.end());
    EXPECT_EQ(joined, rows_in(batch));
  }
  EXPECT_TRUE(contains(error_of([&] { resumed.seek(3, position + 1); }),
                       "not the start of a length-bucketed batch of 4 in an epoch of 37 samples"));
}

}  // namespace
}  // namespace dsee
