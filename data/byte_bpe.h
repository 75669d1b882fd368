// Byte-level BPE, the GPT-2 and RoBERTa tokenizer.
//
//   pre-split   gpt2_pre_tokenize: the GPT-2 pattern
//                 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//               as a scanner over Unicode categories (byte_bpe.cpp)
//   bytes       each byte of a piece becomes one printable character
//               (byte_to_unicode), so every string has a spelling
//   merges      adjacent symbols merged lowest rank first, leftmost first
//               among equal ranks, until no pair has a rank; results cached
//               per piece
//
// add_prefix_space (RoBERTa's option) puts a space before text that does not
// start with one, so the first word is spelt like the others. Decoding maps
// the characters back to bytes; bytes that are not UTF-8 become U+FFFD.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/vocab_map.h"

namespace dsee {

// Pieces of `text` (well-formed UTF-8), as views into it.
std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text);

// byte → the code point that spells it in vocab.json and merges.txt.
const std::array<char32_t, 256>& byte_to_unicode();

class ByteLevelBpe {
 public:
  // merges: pairs of tokens in rank order (rank 0 first).
  ByteLevelBpe(VocabMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool add_prefix_space,
               bool ignore_merges);
  ~ByteLevelBpe();

  // Appends the ids of `text` (no special tokens). Thread-safe.
  void encode(std::string_view text, std::vector<int64_t>& ids) const;
  // The bytes a token id stands for (the token text for added tokens).
  void append_token_bytes(int64_t id, std::string& out) const;

  const VocabMap& vocab() const { return vocab_; }
  bool add_prefix_space() const { return add_prefix_space_; }

 private:
  void encode_piece(std::string_view piece, std::vector<int64_t>& ids) const;

  struct Merges;
  struct Cache;
  VocabMap vocab_;
  std::unordered_map<int64_t, std::string> id_to_token_;  // ids need not be dense
  int64_t max_id_ = -1;
  std::array<int64_t, 256> byte_ids_{};
  std::unique_ptr<Merges> merges_;
  std::unique_ptr<Cache> cache_;
  bool add_prefix_space_;
  bool ignore_merges_;
};

}  // namespace dsee
