// BERT's WordPiece tokenizer: the BERT normaliser and pre-tokenizer, then
// greedy longest-match-first sub-words with a continuation prefix ("##").
//
//   normalise   drop controls (Cc but \t\n\r, Cf, Co), U+0000 and U+FFFD;
//               white space → ' '; spaces around CJK ideographs; when
//               uncased, NFD + drop Mn (accents) and lower-case
//   pre-split   on white space (dropped) and punctuation (one piece each)
//   sub-words   longest prefix in the vocabulary, then "##"-prefixed
//               continuations; a word with an unmatched rest, or longer
//               than max_chars code points, becomes [UNK]
//
// Input is well-formed UTF-8 (unicode::utf8_repair first).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/vocab_map.h"

namespace dsee {

struct BertNormalizerOptions {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool strip_accents = true;  // null in tokenizer.json means "as lowercase"
  bool lowercase = true;
};

std::u32string bert_normalize(std::u32string_view text, const BertNormalizerOptions& options);

// The words of normalised text, as UTF-8.
std::vector<std::string> bert_pre_tokenize(std::u32string_view text);

class WordPiece {
 public:
  WordPiece(VocabMap vocab, const std::string& unk_token, const std::string& continuing_prefix, std::size_t max_chars,
            BertNormalizerOptions normalizer);

  // Appends the ids of `text` (no special tokens).
  void encode(std::string_view text, std::vector<int64_t>& ids) const;
  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int64_t>& ids) const;

  const VocabMap& vocab() const { return vocab_; }

 private:
  VocabMap vocab_;
  VocabMap continuations_;  // "##ing" stored as "ing"
  int64_t unk_id_;
  std::size_t max_chars_;
  BertNormalizerOptions normalizer_;
};

}  // namespace dsee
