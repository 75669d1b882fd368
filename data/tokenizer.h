// The tokenizer the task readers use: loads a Hugging Face tokenizer folder
// and encodes single texts and pairs with the model's special tokens, id for
// id with the tokenizers library (tests/parity/test_tokenizers.py).
//
// Files, first match wins:
//   tokenizer.json                      WordPiece or BPE model, normaliser,
//                                       pre-tokenizer, template, added tokens
//   vocab.txt                           BERT WordPiece
//   vocab.json + merges.txt             GPT-2 / RoBERTa byte-level BPE
// plus tokenizer_config.json / special_tokens_map.json where present
// (do_lower_case, strip_accents, add_prefix_space, special tokens).
//
// Templates: BERT [CLS] a [SEP] b [SEP] with token types 0…0 1…1; RoBERTa
// <s> a </s></s> b </s>, types all 0; GPT-2 a b, no special tokens.
// Text is well-formed UTF-8 (unicode::utf8_repair it first). Added and
// special tokens written in the text ("[SEP]", "<|endoftext|>") are matched
// before normalisation and never split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsee {

struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  std::vector<int64_t> attention_mask;
};

enum class Truncation { longest_first, only_second };
enum class Padding { none, longest, max_length };

struct EncodeOptions {
  bool add_special_tokens = true;
  // Truncates to max_length tokens, special tokens included.
  std::optional<std::size_t> max_length;
  Truncation truncation = Truncation::longest_first;
  // Right padding with the pad token, mask 0, token type 0. longest: to the
  // longest encoding of the batch; max_length: to max_length.
  Padding padding = Padding::none;
  std::optional<int64_t> pad_id;  // default: the tokenizer's pad token
};

enum class TokenizerKind { wordpiece, byte_level_bpe };

class Tokenizer {
 public:
  // Throws dsee::Error naming the file (and line) that is missing or malformed.
  static Tokenizer load(const std::filesystem::path& folder);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  Encoding encode(std::string_view text, const EncodeOptions& options = {}) const;
  Encoding encode_pair(std::string_view first, std::string_view second, const EncodeOptions& options = {}) const;
  // Encodes texts[i] (paired with second[i] when `second` is not empty) on
  // `threads` threads (0: one per core), then pads as options.padding says.
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, const std::vector<std::string>& second,
                                     const EncodeOptions& options = {}, unsigned threads = 0) const;
  // Ids of the text alone: no special tokens, no truncation.
  std::vector<int64_t> tokenize(std::string_view text) const;

  // Byte-level BPE only: the text of `ids` (invalid UTF-8 → U+FFFD).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  TokenizerKind kind() const;
  std::optional<int64_t> token_id(std::string_view token) const;  // vocabulary or added token
  std::optional<int64_t> pad_id() const;
  std::size_t special_tokens_added(bool pair) const;
  std::string describe() const;  // e.g. "byte-level BPE, 50257 tokens, template RoBERTa"

  struct State;

 private:
  explicit Tokenizer(std::unique_ptr<State> state);
  // Truncates, applies the template (pair when `second` is set) and pads.
  Encoding assemble(std::vector<int64_t> first, std::optional<std::vector<int64_t>> second,
                    const EncodeOptions& options) const;
  void pad(std::vector<Encoding>& batch, const EncodeOptions& options) const;
  std::unique_ptr<State> state_;
};

}  // namespace dsee
