// WordPiece (see wordpiece.h). The steps follow the tokenizers library's
// BertNormalizer, BertPreTokenizer and WordPiece model in that order, which
// is what makes the ids agree with BertTokenizerFast.
#include "data/wordpiece.h"

#include "base/error.h"
#include "data/unicode.h"

namespace dsee {

std::u32string bert_normalize(std::u32string_view text, const BertNormalizerOptions& options) {
  std::u32string cleaned;
  cleaned.reserve(text.size() + 8);
  for (char32_t c : text) {
    if (options.clean_text) {
      if (c == 0 || c == 0xFFFD || unicode::is_bert_control(c)) continue;
      if (unicode::is_whitespace(c)) c = ' ';
    }
    if (options.handle_chinese_chars && unicode::is_cjk_ideograph(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  if (options.strip_accents) {
    std::u32string decomposed = unicode::nfd(cleaned);
    cleaned.clear();
    for (char32_t c : decomposed)
      if (!unicode::is_nonspacing_mark(c)) cleaned.push_back(c);
  }
  if (!options.lowercase) return cleaned;
  std::u32string lowered;
  lowered.reserve(cleaned.size());
  for (char32_t c : cleaned) unicode::append_lower(lowered, c);
  return lowered;
}

std::vector<std::string> bert_pre_tokenize(std::u32string_view text) {
  std::vector<std::string> words;
  std::string word;
  const auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (char32_t c : text) {
    if (unicode::is_whitespace(c)) {
      flush();
    } else if (unicode::is_bert_punctuation(c)) {
      flush();
      unicode::utf8_append(word, c);
      flush();
    } else {
      unicode::utf8_append(word, c);
    }
  }
  flush();
  return words;
}

WordPiece::WordPiece(VocabMap vocab, const std::string& unk_token, const std::string& continuing_prefix,
                     std::size_t max_chars, BertNormalizerOptions normalizer)
    : vocab_(std::move(vocab)), max_chars_(max_chars), normalizer_(normalizer) {
  unk_id_ = vocab_find(vocab_, unk_token);
  DSEE_CHECK(unk_id_ >= 0, "the WordPiece vocabulary has no unknown token '{}'; add it to the vocabulary file",
             unk_token);
  for (const auto& [token, id] : vocab_)
    if (token.starts_with(continuing_prefix)) continuations_.emplace(token.substr(continuing_prefix.size()), id);
}

void WordPiece::encode(std::string_view text, std::vector<int64_t>& ids) const {
  const std::u32string normalized = bert_normalize(unicode::utf8_decode(text), normalizer_);
  for (const std::string& word : bert_pre_tokenize(normalized)) encode_word(word, ids);
}

void WordPiece::encode_word(std::string_view word, std::vector<int64_t>& ids) const {
  std::size_t chars = 0;
  for (unsigned char b : word) chars += (b & 0xC0) != 0x80;
  if (chars > max_chars_) {
    ids.push_back(unk_id_);
    return;
  }
  const std::size_t first = ids.size();
  std::size_t start = 0;
  while (start < word.size()) {
    const VocabMap& table = start == 0 ? vocab_ : continuations_;
    std::size_t end = word.size();
    int64_t id = -1;
    while (end > start) {
      id = vocab_find(table, word.substr(start, end - start));
      if (id >= 0) break;
      do --end;  // back to the previous code point boundary
      while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
    }
    if (id < 0) {
      ids.resize(first);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(id);
    start = end;
  }
}

}  // namespace dsee
