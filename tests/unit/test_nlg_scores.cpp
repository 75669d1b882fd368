// The NLG scorers (core/train/nlg_scores.h) on cases small enough to compute
// by hand; tests/parity/test_nlg_scores.py compares them with sacrebleu,
// nltk and pycocoevalcap on a generated corpus.
#include <gtest/gtest.h>

#include <cmath>

#include "base/error.h"
#include "core/train/nlg_scores.h"

namespace dsee {
namespace {

TokenizedItem item(const std::string& hypothesis, const std::vector<std::string>& references) {
  TokenizedItem out{split_whitespace(hypothesis), {}};
  for (const auto& reference : references) out.references.push_back(split_whitespace(reference));
  return out;
}

TEST(NlgTokenize, Splits13aLikeMteval) {
  EXPECT_EQ(tokenize_13a("Hello, world!", false), (Tokens{"Hello", ",", "world", "!"}));
  // '.' and ',' stay inside numbers; '-' splits after a digit.
  EXPECT_EQ(tokenize_13a("It costs £20-25, 1,000.5 or 3.5.", false),
            (Tokens{"It", "costs", "£20", "-", "25", ",", "1,000.5", "or", "3.5", "."}));
  EXPECT_EQ(tokenize_13a("e.g. AT&amp;T (the \"best\")", false),
            (Tokens{"e", ".", "g", ".", "AT", "&", "T", "(", "the", "\"", "best", "\"", ")"}));
  EXPECT_EQ(tokenize_13a("don't  stop\tnow", false), (Tokens{"don't", "stop", "now"}));
  EXPECT_EQ(tokenize_13a("a<skipped>b", false), (Tokens{"ab"}));
}

TEST(NlgTokenize, LowerCasesAsPython) {
  // U+0130 lower-cases to two code points, as Python's str.lower().
  EXPECT_EQ(text_lower("İSTANBUL Straße ÉLAN"), "i̇stanbul straße élan");
  EXPECT_EQ(tokenize_13a("The EAGLE.", true), (Tokens{"the", "eagle", "."}));
}

TEST(NlgTokenize, SplitsAtPythonWhitespace) {
  // U+00A0 and U+2009 are whitespace to str.split(); U+200B is not.
  EXPECT_EQ(split_whitespace("a\u00a0b\u2009c\u200bd \x1f e"), (Tokens{"a", "b", "c\u200bd", "e"}));
  EXPECT_EQ(tokenize_coco("The Eagle, near Burger King's -- cheap!"),
            (Tokens{"the", "eagle", "near", "burger", "king's", "cheap"}));
}

TEST(NlgBleu, IdenticalHypothesisScores100) {
  EXPECT_NEAR(corpus_bleu({item("the eagle is a coffee shop", {"the eagle is a coffee shop"})}), 100.0, 1e-12);
}

TEST(NlgBleu, EmptyHypothesisScores0) { EXPECT_EQ(corpus_bleu({item("", {"the eagle is a coffee shop"})}), 0.0); }

TEST(NlgBleu, BrevityPenalty) {
  // Every n-gram matches; 4 words against 8: BP = exp(1 - 8/4).
  EXPECT_NEAR(corpus_bleu({item("a b c d", {"a b c d e f g h"})}), 100.0 * std::exp(-1.0), 1e-9);
  // The closest reference length counts (6, not 8).
  EXPECT_NEAR(corpus_bleu({item("a b c d", {"a b c d e f g h", "a b c d e f"})}), 100.0 * std::exp(1.0 - 6.0 / 4),
              1e-9);
  // 6 and 2 are both 2 words away from 4: the 2 wins, and a hypothesis longer than it has no penalty.
  EXPECT_NEAR(corpus_bleu({item("a b c d", {"a b c d e f", "a b"})}), 100.0, 1e-9);
}

TEST(NlgBleu, ExpSmoothingOfAZeroPrecision) {
  // Precisions 3/4, 2/3, 1/2 and 0/1, smoothed to 1/(2*1) as mteval-v13a does.
  const double expected = std::exp((std::log(75.0) + std::log(200.0 / 3) + std::log(50.0) + std::log(50.0)) / 4);
  EXPECT_NEAR(corpus_bleu({item("a b c x", {"a b c d"})}), expected, 1e-9);
}

TEST(NlgBleu, ReferenceCountsAreClipped) {
  // "a" 4 times against 2 in the reference: unigrams 2/4, bigrams "a a" 1/3,
  // trigrams 0/2 and 4-grams 0/1 smoothed to 1/(2*2) and 1/(4*1).
  const double expected = std::exp((std::log(50.0) + std::log(100.0 / 3) + std::log(25.0) + std::log(25.0)) / 4);
  EXPECT_NEAR(corpus_bleu({item("a a a a", {"a a b c"})}), expected, 1e-9);
}

TEST(NlgTer, OneShiftIsOneEdit) { EXPECT_NEAR(corpus_ter({item("b c a", {"a b c"})}), 100.0 / 3, 1e-9); }

TEST(NlgTer, FewestEditsOverAverageReferenceLength) {
  // Against "a b c" 0 edits, against "x y z w" 4: 0 / ((3 + 4) / 2).
  EXPECT_EQ(corpus_ter({item("a b c", {"x y z w", "a b c"})}), 0.0);
  // An empty hypothesis: every reference word inserted.
  EXPECT_NEAR(corpus_ter({item("", {"a b c", "a b c d e"})}), 100.0 * 3 / 4, 1e-9);
}

TEST(NlgNist, IdenticalSentenceIsItsUnigramInformation) {
  // Unigrams carry log2(5/1) each; longer n-grams repeat their prefix: 0.
  EXPECT_NEAR(corpus_nist({item("a b c d e", {"a b c d e"})}), std::log2(5.0), 1e-12);
}

TEST(NlgRougeL, LongestCommonSubsequenceF) {
  // LCS("a b c d", "a c d e f") = 3: P = 3/4, R = 3/5, beta 1.2.
  const double p = 0.75, r = 0.6, b2 = 1.44;
  EXPECT_NEAR(corpus_rouge_l({item("a b c d", {"a c d e f"})}), (1 + b2) * p * r / (r + b2 * p), 1e-12);
  // Precision and recall each take their best reference (P = 1 from the
  // first, R = 1 from the second), so F is 1 though neither matches fully.
  EXPECT_NEAR(corpus_rouge_l({item("a b", {"a b c d", "b"})}), 1.0, 1e-12);
  EXPECT_EQ(corpus_rouge_l({item("", {"a b"})}), 0.0);
}

TEST(NlgCider, OneItemCorpusScoresZero) {
  // idf = log(items) - log(df) = log(1) - log(1): every weight is 0.
  EXPECT_EQ(corpus_cider_d({item("a b c", {"a b c"})}), 0.0);
}

TEST(NlgCider, IdenticalItemsOfAnOtherwiseDisjointCorpus) {
  // Two items with no shared n-grams, each hypothesis equal to its only
  // reference: every cosine is 1 and the length penalty 1, so 10 per item.
  EXPECT_NEAR(corpus_cider_d({item("a b c d", {"a b c d"}), item("e f g h", {"e f g h"})}), 10.0, 1e-12);
}

TEST(NlgScores, ItemWithoutReferenceIsAnError) {
  EXPECT_THROW(corpus_bleu({item("a", {})}), Error);
  EXPECT_THROW(corpus_ter({}), Error);
  EXPECT_THROW(score_corpus({{"a", {"a"}}}, {"meteor"}), Error);
}

}  // namespace
}  // namespace dsee
