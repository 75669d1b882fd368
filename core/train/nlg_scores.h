// Corpus scores of generated text against grouped references: BLEU, NIST,
// ROUGE-L, CIDEr-D and TER, each the number of one reference implementation
// (below), so `dsee run` can score every evaluation in process without the
// Python stack. No LibTorch here: strings in, doubles out.
//
// Each scorer takes tokens, and each reference implementation tokenizes in
// its own way, so tokenization is a step of its own; score_corpus() does the
// whole thing with the tokenizer each metric is matched under:
//
//   metric   tokens                         matches (corpus score, scale)
//   bleu     tokenize_13a                   sacrebleu 2.6 BLEU (4-gram, exp smoothing,
//                                           closest reference length), 0-100
//   nist     tokenize_13a                   nltk 3.10 corpus_nist (5-gram), raw
//   rouge_l  tokenize_coco                  pycocoevalcap 1.2 Rouge (LCS, beta 1.2,
//                                           precision and recall max over references,
//                                           mean over items), 0-1
//   cider    tokenize_coco                  pycocoevalcap 1.2 Cider (CIDEr-D: n=4,
//                                           sigma 6, clipping, x10, document
//                                           frequencies from the corpus' references), raw
//   ter      tokenize_ter                   sacrebleu 2.6 TER (shifts, beam edit
//                                           distance; fewest edits over references
//                                           divided by the mean reference length), 0-100
//
// Lower-casing is Python's str.lower() (full mappings; the Greek final-sigma
// rule is not applied), whitespace is Python's str.split() (str.isspace()).
// Text is UTF-8; bytes that are not are copied unchanged.
// docs/scoring.md has the scales the papers print and a worked example.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace dsee {

using Tokens = std::vector<std::string>;

// Python's str.lower() on UTF-8 text.
std::string text_lower(std::string_view text);
// Python's str.split(): runs of str.isspace() characters separate tokens.
Tokens split_whitespace(std::string_view text);

// mteval-v13a's tokenization as sacrebleu's `13a` tokenizer applies it
// (after an optional lower-casing and a right strip): <skipped> and XML
// entities, then punctuation and symbols split off, '.' and ',' split unless
// between digits, '-' split after a digit.
Tokens tokenize_13a(std::string_view text, bool lowercase);
// The tokens ROUGE-L and CIDEr-D are scored on: lower-cased tokenize_13a
// without the punctuation tokens pycocoevalcap's PTBTokenizer drops (. , ? !
// : ; - -- ... ' '' ` ``). The E2E scorer feeds pycocoevalcap Stanford's PTB
// tokenizer output instead (Java); `dsee score --official` runs that, and
// docs/scoring.md says where the two tokenizations differ.
Tokens tokenize_coco(std::string_view text);
// sacrebleu's TER tokenizer with its defaults (tercom, not normalized):
// lower-cased unless case_sensitive, then split at whitespace.
Tokens tokenize_ter(std::string_view text, bool case_sensitive);

// One item: a hypothesis and its references (at least one).
struct TokenizedItem {
  Tokens hypothesis;
  std::vector<Tokens> references;
};

// The scorers. Every one: dsee::Error naming the item when an item has no
// reference or the corpus is empty.
double corpus_bleu(const std::vector<TokenizedItem>& items);
double corpus_nist(const std::vector<TokenizedItem>& items, int max_order = 5);
// pycocoevalcap splits its strings on " ", so an empty token list is one
// empty token there; the same here.
double corpus_rouge_l(const std::vector<TokenizedItem>& items);
double corpus_cider_d(const std::vector<TokenizedItem>& items);
double corpus_ter(const std::vector<TokenizedItem>& items);

// Untokenized items: a hypothesis and its present references.
struct TextItem {
  std::string hypothesis;
  std::vector<std::string> references;
};

struct NlgScoreOptions {
  // BLEU and NIST lower-case by default, as the E2E scorer's mteval-v13a
  // does; TER lower-cases unless this is set, as sacrebleu's TER.
  bool case_sensitive = false;
};

// The metric names score_corpus knows, in the order they are printed.
const std::vector<std::string>& native_metric_names();
// Tokenizes and scores `metrics` (names from native_metric_names(); others:
// dsee::Error listing them). Keys are the metric names.
std::map<std::string, double> score_corpus(const std::vector<TextItem>& items, const std::vector<std::string>& metrics,
                                           const NlgScoreOptions& options = {});

}  // namespace dsee
