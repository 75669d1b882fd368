// The pieces of core/train/generation.h that need no reference library:
// n-gram banning, the length penalty's ranking, beam search against greedy
// on a bigram table whose best sequence is known, min_new_tokens, option
// errors, and GPT-2 with left padding and a reordered cache. Token identity
// with transformers' generate is tests/parity/test_generate.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/model/gpt2.h"
#include "core/train/generation.h"
#include "error_of.h"
#include "tiny_models.h"

namespace dsee {
namespace {

const double kInf = std::numeric_limits<double>::infinity();

// Which tokens of a [1, V] score row are banned (-inf).
std::vector<std::int64_t> banned_of(const at::Tensor& scores) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < scores.size(1); ++i)
    if (std::isinf(scores[0][i].item<double>())) out.push_back(i);
  return out;
}

TEST(NoRepeatNgram, BansTheTokenThatWouldCompleteARepeatedNgram) {
  const auto sequence = at::tensor({1, 2, 3, 1, 2}, at::kLong).view({1, 5});
  const auto scores = at::zeros({1, 6});
  // "1 2" was followed by 3: a third "1 2 3" is banned; nothing else.
  EXPECT_EQ(banned_of(no_repeat_ngram_ban(sequence, scores, 3)), (std::vector<std::int64_t>{3}));
  // bigrams: after "2", the earlier "2 3" bans 3.
  EXPECT_EQ(banned_of(no_repeat_ngram_ban(sequence, scores, 2)), (std::vector<std::int64_t>{3}));
  // unigrams: every token seen is banned.
  EXPECT_EQ(banned_of(no_repeat_ngram_ban(sequence, scores, 1)), (std::vector<std::int64_t>{1, 2, 3}));
  // 4-grams: the suffix "3 1 2" has not occurred before.
  EXPECT_TRUE(banned_of(no_repeat_ngram_ban(sequence, scores, 4)).empty());
  // Shorter than n: nothing to ban.
  EXPECT_TRUE(banned_of(no_repeat_ngram_ban(sequence, scores, 6)).empty());
}

TEST(NoRepeatNgram, RowsAreIndependent) {
  const auto sequences = at::tensor({4, 5, 4, 1, 2, 1}, at::kLong).view({2, 3});
  const auto banned = no_repeat_ngram_ban(sequences, at::zeros({2, 6}), 2);
  EXPECT_TRUE(std::isinf(banned[0][5].item<double>()));
  EXPECT_TRUE(std::isinf(banned[1][2].item<double>()));
  EXPECT_EQ(at::isinf(banned).sum().item<std::int64_t>(), 2);
}

TEST(LengthPenalty, RanksLongerHypothesesHigherAsItGrows) {
  // Σ log p = -2 over 2 tokens against -3 over 4 tokens.
  const auto shorter = at::tensor({-2.0f}), longer = at::tensor({-3.0f});
  const auto score = [](const at::Tensor& t, std::int64_t n, double lp) {
    return length_penalized(t, n, lp).item<float>();
  };
  EXPECT_GT(score(shorter, 2, 0.0), score(longer, 4, 0.0));  // no penalty: the raw sum
  EXPECT_LT(score(shorter, 2, 1.0), score(longer, 4, 1.0));  // per-token mean: -1 < -0.75
  EXPECT_FLOAT_EQ(score(longer, 4, 0.8), float(-3.0 / std::pow(4.0, 0.8)));
}

// A bigram language model: the next token's distribution depends on the last
// token only. Tokens: 0 eos, 1 "a", 2 "b", 3 the prompt.
class BigramModel final : public NextTokenModel {
 public:
  BigramModel() {
    table_ = at::full({4, 4}, 1e-6);
    set(3, {{1, 0.6}, {2, 0.4}});
    set(1, {{0, 0.5}, {1, 0.25}, {2, 0.25}});
    set(2, {{0, 0.9}, {1, 0.05}, {2, 0.05}});
    set(0, {{0, 1.0}});
    table_ = table_.log();
  }
  at::Tensor prefill(const at::Tensor& ids, const at::Tensor&, const at::Tensor&) override {
    return next(ids.select(1, -1));
  }
  at::Tensor step(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    EXPECT_EQ(ids.size(1), 1);
    EXPECT_EQ(mask.size(0), ids.size(0));
    EXPECT_EQ(positions.sizes(), ids.sizes());
    return next(ids.select(1, 0));
  }
  void reorder(const at::Tensor&) override {}

 private:
  void set(std::int64_t from, std::vector<std::pair<std::int64_t, double>> probabilities) {
    for (const auto& [to, p] : probabilities) table_[from][to] = p;
  }
  at::Tensor next(const at::Tensor& last) { return table_.index_select(0, last).to(at::kFloat); }
  at::Tensor table_;
};

GenerationOptions bigram_options(std::int64_t beam, double length_penalty) {
  GenerationOptions o;
  o.beam_size = beam;
  o.length_penalty = length_penalty;
  o.max_new_tokens = 4;
  o.eos_ids = {0};
  return o;
}

TEST(Generate, GreedyTakesTheLocallyBestTokenAndStopsAtEos) {
  BigramModel model;
  // a (0.6), then eos (0.5): 0.30 in all.
  EXPECT_EQ(generate(model, {{3}}, bigram_options(1, 1.0)), (std::vector<std::vector<std::int64_t>>{{1, 0}}));
}

TEST(Generate, BeamSearchFindsTheMoreLikelySequence) {
  BigramModel model;
  // b (0.4), then eos (0.9): 0.36 beats a eos (0.30).
  EXPECT_EQ(generate(model, {{3}}, bigram_options(2, 1.0)), (std::vector<std::vector<std::int64_t>>{{2, 0}}));
  // Two prompts in one batch, of different lengths: each decodes as alone.
  EXPECT_EQ(generate(model, {{3}, {2, 2, 3}}, bigram_options(2, 1.0)),
            (std::vector<std::vector<std::int64_t>>{{2, 0}, {2, 0}}));
}

TEST(Generate, MinNewTokensKeepsEosOut) {
  BigramModel model;
  auto o = bigram_options(1, 1.0);
  o.min_new_tokens = 3;
  // eos banned for the first 3 tokens: a, then a or b (0.25 each: the first, a), then a again, then eos.
  const auto out = generate(model, {{3}}, o);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], (std::vector<std::int64_t>{1, 1, 1, 0}));
  o.beam_size = 3;
  EXPECT_GE(generate(model, {{3}}, o)[0].size(), 4u);
}

TEST(Generate, StopsAtMaxNewTokensWithoutEos) {
  BigramModel model;
  auto o = bigram_options(2, 1.0);
  o.eos_ids = {3};  // never likely: the sequences run to max_new_tokens
  o.max_new_tokens = 3;
  EXPECT_EQ(generate(model, {{3}}, o)[0].size(), 3u);
  o.beam_size = 1;
  EXPECT_EQ(generate(model, {{3}}, o)[0].size(), 3u);
}

TEST(Generate, RefusesBadOptions) {
  BigramModel model;
  auto o = bigram_options(0, 1.0);
  EXPECT_TRUE(contains(error_of([&] { generate(model, {{3}}, o); }), "beam size must be at least 1"));
  o = bigram_options(2, 1.0);
  o.eos_ids.clear();
  EXPECT_TRUE(contains(error_of([&] { generate(model, {{3}}, o); }), "at least one eos id"));
  o = bigram_options(2, 1.0);
  EXPECT_TRUE(contains(error_of([&] { generate(model, {{3}, {}}, o); }), "prompt 1 has no tokens"));
  o.eos_ids = {9};
  EXPECT_TRUE(contains(error_of([&] { generate(model, {{3}}, o); }), "outside the model's vocabulary"));
  o = bigram_options(2, 1.0);
  o.min_new_tokens = 5;
  EXPECT_TRUE(contains(error_of([&] { generate(model, {{3}}, o); }), "min_new_tokens must be in"));
}

// Left padding with position ids cumsum(mask) - 1 gives the unpadded
// prompt's logits (and no NaN from the padding rows that see no key).
TEST(Gpt2Generation, LeftPaddingWithPositionIdsEqualsTheUnpaddedPrompt) {
  Gpt2Model model(model_config_parse(gpt2_json(), "g.json"), at::kFloat, at::kCPU);
  randomise(model, 5);
  const auto prompt = at::randint(1, 40, {1, 4}, at::kLong);
  ModelInput alone;
  alone.input_ids = prompt;
  const auto want = model.forward(alone).logits.select(1, -1);

  ModelInput padded;
  padded.input_ids = at::cat({at::zeros({1, 3}, at::kLong), prompt}, 1);
  padded.attention_mask = at::cat({at::zeros({1, 3}, at::kLong), at::ones({1, 4}, at::kLong)}, 1);
  padded.position_ids = (padded.attention_mask.cumsum(-1) - 1).clamp_min(0);
  KvCache cache;
  padded.cache = &cache;
  const auto logits = model.forward(padded).logits;
  EXPECT_FALSE(at::isnan(logits).any().item<bool>());
  EXPECT_TRUE(at::allclose(logits.select(1, -1), want, 1e-5, 1e-5));

  // One more token after the padded prompt, with the cache reordered into two copies.
  cache.reorder(at::tensor({0, 0}, at::kLong));
  ModelInput next;
  next.input_ids = at::full({2, 1}, 7, at::kLong);
  next.attention_mask = at::cat({padded.attention_mask, at::ones({1, 1}, at::kLong)}, 1).expand({2, 8});
  next.position_ids = at::full({2, 1}, 4, at::kLong);
  next.cache = &cache;
  alone.input_ids = at::cat({prompt, at::full({1, 1}, 7, at::kLong)}, 1);
  const auto want_next = model.forward(alone).logits.select(1, -1);
  const auto got_next = model.forward(next).logits.select(1, -1);
  EXPECT_TRUE(at::allclose(got_next[0], want_next[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(got_next[1], want_next[0], 1e-5, 1e-5));
}

TEST(Gpt2Generation, RefusesAnotherFamily) {
  auto bert = tiny_model(bert_json(), 1);
  GenerationOptions o;
  o.eos_ids = {0};
  EXPECT_TRUE(contains(error_of([&] { generate(*bert, {{1}}, o); }), "needs a GPT-2 model"));
}

}  // namespace
}  // namespace dsee
