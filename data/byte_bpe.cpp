// Byte-level BPE (see byte_bpe.h).
//
// Note [GPT-2 pattern as a scanner]
// The pattern's alternatives are tried left to right at each position and
// the first that matches wins (not the longest), so the scanner checks them in
// that order:
//   1. an ASCII apostrophe followed by s, t, re, ve, m, ll or d (case matters);
//   2-4. an optional U+0020 then a run of letters, of numbers, or of anything
//        that is neither white space, letter nor number;
//   5. \s+(?!\S): a white-space run that reaches the end of the text, or, when
//      a non-space follows, the run minus its last character (so that a final
//      ' ' can join the next word through " ?"); the backtracking a regex
//      engine would do collapses to "drop the last character";
//   6. \s+: a single white-space character that 5 could not take (a tab, say,
//      before a word).
// \s is White_Space (unicode::is_whitespace), as in Oniguruma, the engine the
// tokenizers library uses.
#include "data/byte_bpe.h"

#include <limits>
#include <mutex>
#include <unordered_map>

#include "base/error.h"
#include "data/unicode.h"

namespace dsee {
namespace {

enum class CharClass { space, white, letter, number, other };

CharClass classify(char32_t c) {
  if (c == ' ') return CharClass::space;
  if (unicode::is_whitespace(c)) return CharClass::white;
  if (unicode::is_letter(c)) return CharClass::letter;
  if (unicode::is_number(c)) return CharClass::number;
  return CharClass::other;
}

// Class of the code point at byte i, and the byte after it.
CharClass class_at(std::string_view text, std::size_t i, std::size_t& next) {
  next = i;
  return classify(unicode::utf8_next(text, next));
}

std::size_t contraction_length(std::string_view rest) {
  if (rest.size() < 2 || rest[0] != '\'') return 0;
  const char a = rest[1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (rest.size() >= 3) {
    const char b = rest[2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

constexpr uint64_t pair_key(int64_t a, int64_t b) {
  return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(static_cast<uint32_t>(b));
}

}  // namespace

std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  std::size_t i = 0;
  while (i < text.size()) {
    if (const std::size_t n = contraction_length(text.substr(i))) {
      pieces.push_back(text.substr(i, n));
      i += n;
      continue;
    }
    std::size_t next = 0;
    CharClass first = class_at(text, i, next);
    const std::size_t start = i;
    if (first == CharClass::space && next < text.size()) {
      std::size_t after = 0;
      const CharClass second = class_at(text, next, after);
      if (second == CharClass::letter || second == CharClass::number || second == CharClass::other) {
        first = second;  // " ?" took the space
        next = after;
      }
    }
    if (first == CharClass::letter || first == CharClass::number || first == CharClass::other) {
      std::size_t end = next;
      while (end < text.size()) {
        std::size_t after = 0;
        if (class_at(text, end, after) != first) break;
        end = after;
      }
      pieces.push_back(text.substr(start, end - start));
      i = end;
      continue;
    }
    // A white-space run [i, end); `last` is where its final character starts.
    std::size_t end = next, last = i;
    while (end < text.size()) {
      std::size_t after = 0;
      const CharClass c = class_at(text, end, after);
      if (c != CharClass::space && c != CharClass::white) break;
      last = end;
      end = after;
    }
    if (end < text.size() && last > i) end = last;  // rule 5 leaves the last one for the next word
    pieces.push_back(text.substr(i, end - i));
    i = end;
  }
  return pieces;
}

const std::array<char32_t, 256>& byte_to_unicode() {
  // GPT-2's table: printable Latin-1 bytes spell themselves, the other 68
  // bytes take the code points from U+0100 up, in byte order.
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

struct ByteLevelBpe::Merges {
  struct Merge {
    int32_t rank;
    int64_t id;
  };
  std::unordered_map<uint64_t, Merge> by_pair;
};

// Note [BPE cache]: pieces repeat (" the", ","), so their ids are kept, in
// shards with a lock each so that batch-encoding threads rarely wait. A full
// shard stops taking entries instead of evicting: the common pieces come first.
struct ByteLevelBpe::Cache {
  static constexpr std::size_t shards = 32;
  static constexpr std::size_t entries_per_shard = 4096;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int64_t>, StringHash, std::equal_to<>> map;
  };
  std::array<Shard, shards> shard;
};

ByteLevelBpe::ByteLevelBpe(VocabMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                           bool add_prefix_space, bool ignore_merges)
    : vocab_(std::move(vocab)),
      merges_(std::make_unique<Merges>()),
      cache_(std::make_unique<Cache>()),
      add_prefix_space_(add_prefix_space),
      ignore_merges_(ignore_merges) {
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab_) max_id = std::max(max_id, id);
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  for (const auto& [token, id] : vocab_) id_to_token_[static_cast<std::size_t>(id)] = token;
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    unicode::utf8_append(spelled, byte_to_unicode()[b]);
    byte_ids_[b] = vocab_find(vocab_, spelled);  // -1: dropped, as the tokenizers library drops it
  }
  merges_->by_pair.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const int64_t ia = vocab_find(vocab_, a), ib = vocab_find(vocab_, b), merged = vocab_find(vocab_, a + b);
    DSEE_CHECK(ia >= 0 && ib >= 0 && merged >= 0,
               "merge {} ('{}' '{}') uses a token that is not in the vocabulary ('{}'{})", rank + 1, a, b,
               ia < 0   ? a
               : ib < 0 ? b
                        : a + b,
               ia < 0 || ib < 0 ? "" : ", the merged token");
    merges_->by_pair.try_emplace(pair_key(ia, ib), Merges::Merge{static_cast<int32_t>(rank), merged});
  }
}

ByteLevelBpe::~ByteLevelBpe() = default;

void ByteLevelBpe::encode(std::string_view text, std::vector<int64_t>& ids) const {
  if (add_prefix_space_ && (text.empty() || text.front() != ' ')) {
    std::string prefixed = " ";
    prefixed.append(text);
    for (std::string_view piece : gpt2_pre_tokenize(prefixed)) encode_piece(piece, ids);
    return;
  }
  for (std::string_view piece : gpt2_pre_tokenize(text)) encode_piece(piece, ids);
}

void ByteLevelBpe::encode_piece(std::string_view piece, std::vector<int64_t>& ids) const {
  Cache::Shard& shard = cache_->shard[std::hash<std::string_view>{}(piece) % Cache::shards];
  {
    std::lock_guard lock(shard.mutex);
    const auto it = shard.map.find(piece);
    if (it != shard.map.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int64_t> symbols;
  if (ignore_merges_) {
    std::string spelled;
    for (unsigned char b : piece) unicode::utf8_append(spelled, byte_to_unicode()[b]);
    if (const int64_t id = vocab_find(vocab_, spelled); id >= 0) symbols.push_back(id);
  }
  if (symbols.empty()) {
    symbols.reserve(piece.size());
    for (unsigned char b : piece)
      if (byte_ids_[b] >= 0) symbols.push_back(byte_ids_[b]);
    // ranks[i]: rank of the pair (symbols[i], symbols[i + 1]).
    constexpr int32_t none = std::numeric_limits<int32_t>::max();
    const auto rank_of = [&](std::size_t i) {
      const auto it = merges_->by_pair.find(pair_key(symbols[i], symbols[i + 1]));
      return it == merges_->by_pair.end() ? none : it->second.rank;
    };
    std::vector<int32_t> ranks(symbols.empty() ? 0 : symbols.size() - 1);
    for (std::size_t i = 0; i < ranks.size(); ++i) ranks[i] = rank_of(i);
    while (!ranks.empty()) {
      std::size_t best = 0;
      for (std::size_t i = 1; i < ranks.size(); ++i)
        if (ranks[i] < ranks[best]) best = i;
      if (ranks[best] == none) break;
      symbols[best] = merges_->by_pair.at(pair_key(symbols[best], symbols[best + 1])).id;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best));
      if (best > 0) ranks[best - 1] = rank_of(best - 1);
      if (best < ranks.size()) ranks[best] = rank_of(best);
    }
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  std::lock_guard lock(shard.mutex);
  if (shard.map.size() < Cache::entries_per_shard) shard.map.try_emplace(std::string(piece), std::move(symbols));
}

void ByteLevelBpe::append_token_bytes(int64_t id, std::string& out) const {
  DSEE_CHECK(id >= 0 && static_cast<std::size_t>(id) < id_to_token_.size(),
             "token id {} is outside the vocabulary (0..{})", id, id_to_token_.size() - 1);
  static const std::unordered_map<char32_t, char> to_byte = [] {
    std::unordered_map<char32_t, char> m;
    for (int b = 0; b < 256; ++b) m.emplace(byte_to_unicode()[b], static_cast<char>(b));
    return m;
  }();
  const std::string& token = id_to_token_[static_cast<std::size_t>(id)];
  std::string bytes;
  for (std::size_t i = 0; i < token.size();) {
    const auto it = to_byte.find(unicode::utf8_next(token, i));
    if (it == to_byte.end()) {  // not spelt in the byte alphabet: the text itself
      out.append(token);
      return;
    }
    bytes.push_back(it->second);
  }
  out.append(bytes);
}

}  // namespace dsee
