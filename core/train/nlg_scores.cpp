// The NLG scorers of nlg_scores.h. Each follows its reference implementation
// step by step, quirks included (they move the numbers papers print):
// sacrebleu's BLEU and TER, nltk's corpus_nist, pycocoevalcap's Rouge and
// Cider. Tokens are interned to integer ids first, so n-grams are short
// u32strings (hashable, compared in one memcmp).
#include "core/train/nlg_scores.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "base/error.h"
#include "base/unicode_case.h"

namespace dsee {
namespace {

// ------------------------------------------------------------------ UTF-8

// Decodes the code point at text[i] and advances i; a byte that does not
// start a well-formed sequence is returned as itself (flag `valid` false).
char32_t next_code_point(std::string_view text, std::size_t& i, bool& valid) {
  const auto lead = static_cast<unsigned char>(text[i]);
  valid = true;
  if (lead < 0x80) {
    ++i;
    return lead;
  }
  const int length = lead >= 0xF0 && lead <= 0xF4 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 && lead < 0xE0 ? 2 : 0;
  if (length == 0 || i + std::size_t(length) > text.size()) {
    valid = false;
    ++i;
    return lead;
  }
  char32_t c = lead & (0xFF >> (length + 1));
  for (int k = 1; k < length; ++k) {
    const auto b = static_cast<unsigned char>(text[i + std::size_t(k)]);
    if ((b & 0xC0) != 0x80) {
      valid = false;
      ++i;
      return lead;
    }
    c = (c << 6) | (b & 0x3F);
  }
  const bool overlong = (length == 3 && c < 0x800) || (length == 4 && c < 0x10000);
  if (overlong || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
    valid = false;
    ++i;
    return lead;
  }
  i += std::size_t(length);
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xC0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(char(0xE0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  }
}

// Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
bool is_python_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.rstrip().
std::string_view rstrip(std::string_view text) {
  // Walk forward remembering where the last non-space character ends.
  std::size_t i = 0, end = 0;
  while (i < text.size()) {
    bool valid = false;
    const char32_t c = next_code_point(text, i, valid);
    if (!valid || !is_python_space(c)) end = i;
  }
  return text.substr(0, end);
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t start = 0;
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, start)) {
    out.append(text, start, at - start);
    out.append(to);
    start = at + from.size();
  }
  if (start == 0) return;
  out.append(text, start);
  text = std::move(out);
}

// One pass of re.sub(r"(A)(B)", "<before>\1<middle>\2<after>") where A and B
// each match one character: a left-to-right scan over non-overlapping pairs.
// Scanning bytes gives Python's result on UTF-8 too: A and B here are ASCII
// classes or [^0-9], and no byte of a multi-byte character is an ASCII one.
template <class First, class Second>
std::string substitute_pairs(const std::string& text, First first, Second second, std::string_view before,
                             std::string_view middle, std::string_view after) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  std::size_t i = 0;
  while (i < text.size()) {
    if (i + 1 < text.size() && first(text[i]) && second(text[i + 1])) {
      out.append(before);
      out.push_back(text[i]);
      out.append(middle);
      out.push_back(text[i + 1]);
      out.append(after);
      i += 2;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The first class of mteval-v13a's language-dependent rules, as sacrebleu
// writes it: [{-~[-` -&(-+:-@/].
bool is_13a_symbol(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
         (c >= ':' && c <= '@') || c == '/';
}

// ------------------------------------------------------------------ n-grams

// Token ids of one scoring call; an n-gram is the u32string of its ids.
class Vocabulary {
 public:
  std::u32string ids(const Tokens& tokens) {
    std::u32string out;
    out.reserve(tokens.size());
    for (const auto& token : tokens) out.push_back(id(token));
    return out;
  }
  char32_t id(const std::string& token) {
    return ids_.try_emplace(token, static_cast<char32_t>(ids_.size())).first->second;
  }

 private:
  std::unordered_map<std::string, char32_t> ids_;
};

using NgramCounts = std::unordered_map<std::u32string, std::int64_t>;

// Counts of the n-grams of orders min_order..max_order of `words`.
NgramCounts count_ngrams(const std::u32string& words, int min_order, int max_order) {
  NgramCounts counts;
  for (int n = min_order; n <= max_order; ++n)
    for (std::size_t i = 0; i + std::size_t(n) <= words.size(); ++i) ++counts[words.substr(i, std::size_t(n))];
  return counts;
}

struct IdItem {
  std::u32string hypothesis;
  std::vector<std::u32string> references;
};

std::vector<IdItem> to_ids(const std::vector<TokenizedItem>& items, const char* metric) {
  DSEE_CHECK(!items.empty(), "{}: no items to score", metric);
  Vocabulary vocabulary;
  std::vector<IdItem> out(items.size());
  for (std::size_t k = 0; k < items.size(); ++k) {
    DSEE_CHECK(!items[k].references.empty(), "{}: item {} has no reference; give every item at least one", metric,
               k + 1);
    out[k].hypothesis = vocabulary.ids(items[k].hypothesis);
    for (const auto& reference : items[k].references) out[k].references.push_back(vocabulary.ids(reference));
  }
  return out;
}

// ------------------------------------------------------------------ TER

// Note [TER as sacrebleu computes it]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
//
// sacrebleu's lib_ter: greedily apply the word shift (a block of at most 10
// words, moved at most 50 positions) that lowers the edit distance most,
// ranked by (gain, block length, earliest start, earliest target), until no
// shift gains or 1000 shift candidates have been tried in all (the round
// that reaches 1000 is not applied); TER edits = shifts + the final edit
// distance. The edit distance is a Levenshtein matrix kept within a beam of
// 25 cells around the length-ratio diagonal, ties broken substitution/match,
// then deletion, then insertion; the backtrace gives the alignment the next
// round's shift candidates come from. Rows of the matrix are cached by
// hypothesis prefix (a shift leaves the words before it in place), as
// sacrebleu's BeamEditDistance does; the cache changes only the time.

constexpr int max_shift_size = 10;
constexpr int max_shift_distance = 50;
constexpr int beam_width_default = 25;
constexpr int max_shift_candidates = 1000;
constexpr std::size_t max_cache_rows = 10000;
constexpr std::int64_t infinity = 10'000'000'000'000'000;

enum class EditOp : char { nop = ' ', sub = 's', ins = 'i', del = 'd', undefined = 'x' };

struct Cell {
  std::int64_t cost;
  EditOp op;
};
using Row = std::vector<Cell>;

class BeamEditDistance {
 public:
  explicit BeamEditDistance(const std::u32string& reference) : reference_(reference) {
    Node root;
    for (std::size_t j = 0; j <= reference.size(); ++j) root.row.push_back({std::int64_t(j), EditOp::ins});
    nodes_.push_back(std::move(root));
  }

  // (edit distance, trace of operations rewriting the hypothesis into the reference).
  std::pair<std::int64_t, std::string> operator()(const std::u32string& hypothesis) {
    // Rows already known for the longest cached prefix of the hypothesis.
    std::vector<std::size_t> path = {0};
    for (const char32_t word : hypothesis) {
      const auto& children = nodes_[path.back()].children;
      const auto found = children.find(word);
      if (found == children.end()) break;
      path.push_back(found->second);
    }
    const std::size_t start = path.size() - 1;
    const std::size_t n_hyp = hypothesis.size(), n_ref = reference_.size();
    std::vector<Row> dist;
    dist.reserve(n_hyp + 1);
    for (const auto node : path) dist.push_back(nodes_[node].row);
    dist.resize(n_hyp + 1, Row(n_ref + 1, Cell{infinity, EditOp::undefined}));

    const double length_ratio = hypothesis.empty() ? 1.0 : double(n_ref) / double(n_hyp);
    const std::int64_t beam_width = beam_width_default < length_ratio / 2
                                        ? std::int64_t(std::ceil(length_ratio / 2 + beam_width_default))
                                        : beam_width_default;
    for (std::size_t i = start + 1; i <= n_hyp; ++i) {
      const auto diagonal = std::int64_t(std::floor(double(i) * length_ratio));
      const auto min_j = std::size_t(std::max<std::int64_t>(0, diagonal - beam_width));
      auto max_j = std::size_t(std::min<std::int64_t>(std::int64_t(n_ref) + 1, diagonal + beam_width));
      if (i == n_hyp) max_j = n_ref + 1;
      for (std::size_t j = min_j; j < max_j; ++j) {
        Cell& cell = dist[i][j];
        if (j == 0) {
          cell = {dist[i - 1][0].cost + 1, EditOp::del};
          continue;
        }
        const bool same = hypothesis[i - 1] == reference_[j - 1];
        const Cell options[3] = {{dist[i - 1][j - 1].cost + (same ? 0 : 1), same ? EditOp::nop : EditOp::sub},
                                 {dist[i - 1][j].cost + 1, EditOp::del},
                                 {dist[i][j - 1].cost + 1, EditOp::ins}};
        for (const auto& option : options)
          if (cell.cost > option.cost) cell = option;
      }
    }

    std::string trace;
    for (std::size_t i = n_hyp, j = n_ref; i > 0 || j > 0;) {
      const EditOp op = dist[i][j].op;
      trace.push_back(char(op));
      if (op == EditOp::sub || op == EditOp::nop) {
        --i;
        --j;
      } else if (op == EditOp::ins) {
        --j;
      } else if (op == EditOp::del) {
        --i;
      } else {
        DSEE_ASSERT(false, "TER: the edit distance backtrace left the beam at ({}, {})", i, j);
      }
    }
    std::reverse(trace.begin(), trace.end());

    // Cache the new rows under the hypothesis prefix they belong to.
    std::size_t node = path.back();
    for (std::size_t i = start + 1; i <= n_hyp && nodes_.size() < max_cache_rows; ++i) {
      const auto child = nodes_.size();
      nodes_[node].children.emplace(hypothesis[i - 1], child);
      nodes_.push_back({{}, dist[i]});
      node = child;
    }
    return {dist[n_hyp][n_ref].cost, std::move(trace)};
  }

 private:
  struct Node {
    std::unordered_map<char32_t, std::size_t> children;
    Row row;
  };
  const std::u32string& reference_;
  std::vector<Node> nodes_;
};

std::u32string perform_shift(const std::u32string& words, std::size_t start, std::size_t length, std::size_t target) {
  // Python slices: out-of-range bounds clip.
  const auto slice = [&](std::size_t from, std::size_t to) {
    from = std::min(from, words.size());
    to = std::min(to, words.size());
    return from < to ? words.substr(from, to - from) : std::u32string();
  };
  if (target < start)
    return slice(0, target) + slice(start, start + length) + slice(target, start) + slice(start + length, words.size());
  if (target > start + length)
    return slice(0, start) + slice(start + length, target) + slice(start, start + length) + slice(target, words.size());
  return slice(0, start) + slice(start + length, length + target) + slice(start, start + length) +
         slice(length + target, words.size());
}

struct ShiftResult {
  std::int64_t gain = 0;
  std::u32string words;
};

ShiftResult best_shift(const std::u32string& hyp, const std::u32string& ref, BeamEditDistance& edit_distance,
                       int& checked_candidates) {
  const auto [pre_score, inverse_trace] = edit_distance(hyp);
  // The alignment of reference positions to hypothesis positions, read from
  // the trace with insertions and deletions swapped (reference → hypothesis).
  std::vector<std::int64_t> align;
  std::vector<int> ref_err, hyp_err;
  std::int64_t pos_hyp = -1;
  for (const char op : inverse_trace) {
    if (op == char(EditOp::nop) || op == char(EditOp::sub)) {
      ++pos_hyp;
      align.push_back(pos_hyp);
      const int err = op == char(EditOp::sub) ? 1 : 0;
      hyp_err.push_back(err);
      ref_err.push_back(err);
    } else if (op == char(EditOp::ins)) {  // a deletion once flipped: a reference word
      align.push_back(pos_hyp);
      ref_err.push_back(1);
    } else {  // a deletion, flipped to an insertion: a hypothesis word
      ++pos_hyp;
      hyp_err.push_back(1);
    }
  }
  const auto any_error = [](const std::vector<int>& errors, std::size_t from, std::size_t length) {
    for (std::size_t k = from; k < std::min(errors.size(), from + length); ++k)
      if (errors[k] != 0) return true;
    return false;
  };

  const auto result = [](std::int64_t gain, const std::u32string& words) { return ShiftResult{gain, words}; };
  bool found = false;
  std::array<std::int64_t, 4> best_key{};
  std::u32string best_words;
  const std::size_t n_hyp = hyp.size(), n_ref = ref.size();
  for (std::size_t start_h = 0; start_h < n_hyp; ++start_h) {
    for (std::size_t start_r = 0; start_r < n_ref; ++start_r) {
      if (std::llabs(std::int64_t(start_r) - std::int64_t(start_h)) > max_shift_distance) continue;
      std::size_t length = 0;
      while (hyp[start_h + length] == ref[start_r + length] && length < max_shift_size) {
        ++length;
        // One candidate block: hyp[start_h, +length) == ref[start_r, +length).
        const bool worth_trying =
            any_error(hyp_err, start_h, length) && any_error(ref_err, start_r, length) &&
            !(std::int64_t(start_h) <= align[start_r] && align[start_r] < std::int64_t(start_h + length));
        if (worth_trying) {
          std::int64_t previous_target = -1;
          for (std::int64_t offset = -1; offset < std::int64_t(length); ++offset) {
            std::int64_t target;
            if (std::int64_t(start_r) + offset == -1)
              target = 0;
            else if (std::int64_t(start_r) + offset < std::int64_t(n_ref))
              target = align[std::size_t(std::int64_t(start_r) + offset)] + 1;
            else
              break;
            if (target == previous_target) continue;
            previous_target = target;
            auto shifted = perform_shift(hyp, start_h, length, std::size_t(target));
            const std::array<std::int64_t, 4> key = {pre_score - edit_distance(shifted).first, std::int64_t(length),
                                                     -std::int64_t(start_h), -target};
            ++checked_candidates;
            if (!found || key > best_key) {
              found = true;
              best_key = key;
              best_words = std::move(shifted);
            }
          }
          // sacrebleu stops looking once that many candidates were scored.
          if (checked_candidates >= max_shift_candidates)
            return found ? result(best_key[0], best_words) : result(0, hyp);
        }
        if (n_hyp == start_h + length || n_ref == start_r + length) break;
      }
    }
  }
  return found ? result(best_key[0], best_words) : result(0, hyp);
}

// (edits, reference length) of one hypothesis against one reference.
std::pair<std::int64_t, std::int64_t> translation_edit_rate(const std::u32string& hyp, const std::u32string& ref) {
  if (ref.empty()) return {std::int64_t(hyp.size()), 0};
  BeamEditDistance edit_distance(ref);
  std::int64_t shifts = 0;
  int checked_candidates = 0;
  std::u32string words = hyp;
  while (true) {
    auto shift = best_shift(words, ref, edit_distance, checked_candidates);
    if (checked_candidates >= max_shift_candidates || shift.gain <= 0) break;
    ++shifts;
    words = std::move(shift.words);
  }
  return {shifts + edit_distance(words).first, std::int64_t(ref.size())};
}

}  // namespace

// ------------------------------------------------------------------ text

std::string text_lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::u32string lowered;  // one code point's mapping (base/unicode_case.h)
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      out.push_back(byte >= 'A' && byte <= 'Z' ? char(byte + 32) : char(byte));
      ++i;
      continue;
    }
    const std::size_t at = i;
    bool valid = false;
    const char32_t c = next_code_point(text, i, valid);
    if (!valid) {
      out.push_back(text[at]);
      continue;
    }
    lowered.clear();
    unicode::append_lower(lowered, c);
    for (const char32_t l : lowered) append_utf8(out, l);
  }
  return out;
}

Tokens split_whitespace(std::string_view text) {
  Tokens tokens;
  std::size_t i = 0, token_start = std::string_view::npos;
  while (i < text.size()) {
    const std::size_t at = i;
    bool valid = false;
    const char32_t c = next_code_point(text, i, valid);
    const bool space = valid && is_python_space(c);
    if (space && token_start != std::string_view::npos) {
      tokens.emplace_back(text.substr(token_start, at - token_start));
      token_start = std::string_view::npos;
    } else if (!space && token_start == std::string_view::npos) {
      token_start = at;
    }
  }
  if (token_start != std::string_view::npos) tokens.emplace_back(text.substr(token_start));
  return tokens;
}

Tokens tokenize_13a(std::string_view text, bool lowercase) {
  std::string line = lowercase ? text_lower(text) : std::string(text);
  line.resize(rstrip(line).size());
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  std::string spaced = " ";
  for (const char c : line) {
    if (is_13a_symbol(c)) {
      spaced.push_back(' ');
      spaced.push_back(c);
      spaced.push_back(' ');
    } else {
      spaced.push_back(c);
    }
  }
  spaced.push_back(' ');
  const auto period_or_comma = [](char c) { return c == '.' || c == ','; };
  const auto not_digit = [](char c) { return !is_digit(c); };
  spaced = substitute_pairs(spaced, not_digit, period_or_comma, "", " ", " ");
  spaced = substitute_pairs(spaced, period_or_comma, not_digit, " ", " ", "");
  spaced = substitute_pairs(
      spaced, is_digit, [](char c) { return c == '-'; }, "", " ", " ");
  return split_whitespace(spaced);
}

Tokens tokenize_coco(std::string_view text) {
  static const std::unordered_set<std::string> punctuation = {
      "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"};
  Tokens tokens = tokenize_13a(text, /*lowercase=*/true);
  tokens.erase(std::remove_if(tokens.begin(), tokens.end(), [](const std::string& t) { return punctuation.count(t); }),
               tokens.end());
  return tokens;
}

Tokens tokenize_ter(std::string_view text, bool case_sensitive) {
  const std::string_view stripped = rstrip(text);
  return case_sensitive ? split_whitespace(stripped) : split_whitespace(text_lower(stripped));
}

// ------------------------------------------------------------------ scorers

double corpus_bleu(const std::vector<TokenizedItem>& tokenized) {
  constexpr int max_order = 4;
  const auto items = to_ids(tokenized, "BLEU");
  std::int64_t sys_len = 0, ref_len = 0;
  std::array<std::int64_t, max_order> correct{}, total{};
  for (const auto& item : items) {
    // Reference n-gram counts: the maximum over references.
    NgramCounts reference_counts;
    std::int64_t closest = -1, closest_diff = -1;
    const auto hyp_len = std::int64_t(item.hypothesis.size());
    for (const auto& reference : item.references) {
      for (const auto& [ngram, count] : count_ngrams(reference, 1, max_order)) {
        auto& kept = reference_counts[ngram];
        kept = std::max(kept, count);
      }
      const auto len = std::int64_t(reference.size());
      const auto diff = std::llabs(hyp_len - len);
      if (closest_diff == -1 || diff < closest_diff || (diff == closest_diff && len < closest)) {
        closest_diff = diff;
        closest = len;
      }
    }
    sys_len += hyp_len;
    ref_len += closest;
    for (const auto& [ngram, count] : count_ngrams(item.hypothesis, 1, max_order)) {
      const std::size_t n = ngram.size() - 1;
      total[n] += count;
      const auto found = reference_counts.find(ngram);
      if (found != reference_counts.end()) correct[n] += std::min(count, found->second);
    }
  }
  // sacrebleu's compute_bleu with smooth_method "exp" (mteval-v13a's).
  const double brevity_penalty =
      sys_len < ref_len ? (sys_len > 0 ? std::exp(1.0 - double(ref_len) / double(sys_len)) : 0.0) : 1.0;
  if (std::all_of(correct.begin(), correct.end(), [](std::int64_t c) { return c == 0; })) return 0.0;
  std::array<double, max_order> precisions{};
  double smooth = 1.0;
  for (int n = 0; n < max_order; ++n) {
    if (total[n] == 0) break;
    if (correct[n] == 0) {
      smooth *= 2;
      precisions[n] = 100.0 / (smooth * double(total[n]));
    } else {
      precisions[n] = 100.0 * double(correct[n]) / double(total[n]);
    }
  }
  double log_sum = 0;
  for (const double p : precisions) log_sum += p == 0.0 ? -9999999999.0 : std::log(p);
  return brevity_penalty * std::exp(log_sum / max_order);
}

double corpus_nist(const std::vector<TokenizedItem>& tokenized, int max_order) {
  DSEE_CHECK(max_order >= 1, "NIST: the n-gram order must be at least 1, not {}", max_order);
  const auto items = to_ids(tokenized, "NIST");
  // Information weights from n-gram counts over every reference of the corpus.
  NgramCounts frequency;
  std::int64_t reference_words = 0;
  for (const auto& item : items)
    for (const auto& reference : item.references) {
      for (const auto& [ngram, count] : count_ngrams(reference, 1, max_order)) frequency[ngram] += count;
      reference_words += std::int64_t(reference.size());
    }
  const auto information = [&](const std::u32string& ngram) {
    const auto prefix = ngram.substr(0, ngram.size() - 1);
    const auto found = prefix.empty() ? frequency.end() : frequency.find(prefix);
    const double numerator = found != frequency.end() ? double(found->second) : double(reference_words);
    return std::log2(numerator / double(frequency.at(ngram)));
  };

  std::vector<double> numerator(std::size_t(max_order) + 1, 0.0);
  std::vector<std::int64_t> denominator(std::size_t(max_order) + 1, 0);
  std::int64_t l_ref = 0, l_sys = 0;
  for (int n = 1; n <= max_order; ++n) {
    for (const auto& item : items) {
      const NgramCounts hyp_counts = count_ngrams(item.hypothesis, n, n);
      std::int64_t hyp_total = 0;
      for (const auto& entry : hyp_counts) hyp_total += entry.second;
      // nltk keeps the reference with the largest (precision, numerator,
      // denominator, length), compared in that order.
      std::tuple<double, double, std::int64_t, std::int64_t> best{};
      bool first = true;
      for (const auto& reference : item.references) {
        const NgramCounts ref_counts = count_ngrams(reference, n, n);
        double overlap = 0;
        for (const auto& [ngram, count] : hyp_counts) {
          const auto found = ref_counts.find(ngram);
          if (found != ref_counts.end()) overlap += information(ngram) * double(std::min(count, found->second));
        }
        const double precision = hyp_total == 0 ? 0.0 : overlap / double(hyp_total);
        const auto candidate = std::make_tuple(precision, overlap, hyp_total, std::int64_t(reference.size()));
        if (first || candidate > best) best = candidate;
        first = false;
      }
      numerator[std::size_t(n)] += std::get<1>(best);
      denominator[std::size_t(n)] += std::get<2>(best);
      l_ref += std::get<3>(best);
      l_sys += std::int64_t(item.hypothesis.size());
    }
  }
  double score = 0;
  // nltk divides by zero when no hypothesis has n words; such an order adds 0 here.
  for (int n = 1; n <= max_order; ++n)
    if (denominator[std::size_t(n)] > 0) score += numerator[std::size_t(n)] / double(denominator[std::size_t(n)]);
  if (l_ref == 0) return 0.0;
  const double ratio = double(l_sys) / double(l_ref);
  double penalty;
  if (ratio > 0 && ratio < 1) {
    const double beta = std::log(0.5) / std::pow(std::log(1.5), 2);
    penalty = std::exp(beta * std::pow(std::log(ratio), 2));
  } else {
    penalty = std::clamp(ratio, 0.0, 1.0);
  }
  return score * penalty;
}

double corpus_rouge_l(const std::vector<TokenizedItem>& tokenized) {
  constexpr double beta = 1.2;
  auto items = to_ids(tokenized, "ROUGE-L");
  // pycocoevalcap's "".split(" ") is [""]: one empty token (any id no token has).
  const char32_t empty_token = std::numeric_limits<char32_t>::max();
  const auto as_split = [&](std::u32string& words) {
    if (words.empty()) words.push_back(empty_token);
  };
  double sum = 0;
  std::vector<std::int64_t> previous, current;
  for (auto& item : items) {
    as_split(item.hypothesis);
    double precision_max = 0, recall_max = 0;
    for (auto& reference : item.references) {
      as_split(reference);
      const auto& a = item.hypothesis;
      const auto& b = reference;
      previous.assign(b.size() + 1, 0);
      current.assign(b.size() + 1, 0);
      for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j)
          current[j] = a[i - 1] == b[j - 1] ? previous[j - 1] + 1 : std::max(previous[j], current[j - 1]);
        std::swap(previous, current);
      }
      const auto lcs = double(previous[b.size()]);
      precision_max = std::max(precision_max, lcs / double(a.size()));
      recall_max = std::max(recall_max, lcs / double(b.size()));
    }
    if (precision_max != 0 && recall_max != 0)
      sum += (1 + beta * beta) * precision_max * recall_max / (recall_max + beta * beta * precision_max);
  }
  return sum / double(items.size());
}

double corpus_cider_d(const std::vector<TokenizedItem>& tokenized) {
  constexpr int max_order = 4;
  constexpr double sigma = 6.0;
  const auto items = to_ids(tokenized, "CIDEr-D");
  // Document frequency: in how many items' reference sets an n-gram occurs.
  NgramCounts document_frequency;
  for (const auto& item : items) {
    std::unordered_set<std::u32string> seen;
    for (const auto& reference : item.references)
      for (const auto& entry : count_ngrams(reference, 1, max_order)) seen.insert(entry.first);
    for (const auto& ngram : seen) ++document_frequency[ngram];
  }
  const double log_items = std::log(double(items.size()));

  struct Vector {
    std::array<std::unordered_map<std::u32string, double>, max_order> weights;
    std::array<double, max_order> norm{};
    // pycocoevalcap's "length" counts bigrams (its n == 1 is the second order).
    std::int64_t length = 0;
  };
  const auto tf_idf = [&](const std::u32string& words) {
    Vector v;
    for (const auto& [ngram, tf] : count_ngrams(words, 1, max_order)) {
      const auto found = document_frequency.find(ngram);
      const double df = std::log(std::max(1.0, found == document_frequency.end() ? 0.0 : double(found->second)));
      const std::size_t n = ngram.size() - 1;
      const double w = double(tf) * (log_items - df);
      v.weights[n][ngram] = w;
      v.norm[n] += w * w;
      if (n == 1) v.length += tf;
    }
    for (auto& norm : v.norm) norm = std::sqrt(norm);
    return v;
  };

  double sum = 0;
  for (const auto& item : items) {
    const Vector hyp = tf_idf(item.hypothesis);
    std::array<double, max_order> score{};
    for (const auto& reference : item.references) {
      const Vector ref = tf_idf(reference);
      const double delta = double(hyp.length - ref.length);
      for (std::size_t n = 0; n < max_order; ++n) {
        double value = 0;
        for (const auto& [ngram, w] : hyp.weights[n]) {
          const auto found = ref.weights[n].find(ngram);
          const double r = found == ref.weights[n].end() ? 0.0 : found->second;
          value += std::min(w, r) * r;  // the clipping of CIDEr-D
        }
        if (hyp.norm[n] != 0 && ref.norm[n] != 0) value /= hyp.norm[n] * ref.norm[n];
        value *= std::exp(-(delta * delta) / (2 * sigma * sigma));
        score[n] += value;
      }
    }
    double mean = 0;
    for (const double s : score) mean += s;
    mean /= max_order;
    sum += mean / double(item.references.size()) * 10.0;
  }
  return sum / double(items.size());
}

double corpus_ter(const std::vector<TokenizedItem>& tokenized) {
  const auto items = to_ids(tokenized, "TER");
  double total_edits = 0, total_length = 0;
  for (const auto& item : items) {
    std::int64_t best = std::numeric_limits<std::int64_t>::max(), lengths = 0;
    for (const auto& reference : item.references) {
      const auto [edits, length] = translation_edit_rate(item.hypothesis, reference);
      lengths += length;
      best = std::min(best, edits);
    }
    total_edits += double(best);
    total_length += double(lengths) / double(item.references.size());
  }
  if (total_length > 0) return 100.0 * total_edits / total_length;
  return total_edits > 0 ? 100.0 : 0.0;
}

// ------------------------------------------------------------------ corpus

const std::vector<std::string>& native_metric_names() {
  static const std::vector<std::string> names = {"bleu", "nist", "rouge_l", "cider", "ter"};
  return names;
}

std::map<std::string, double> score_corpus(const std::vector<TextItem>& items, const std::vector<std::string>& metrics,
                                           const NlgScoreOptions& options) {
  const auto& known = native_metric_names();
  for (const auto& metric : metrics)
    DSEE_CHECK(std::find(known.begin(), known.end(), metric) != known.end(),
               "unknown metric '{}': the native scorers are {}", metric, fmt::join(known, ", "));
  const auto tokenized = [&](auto tokenize) {
    std::vector<TokenizedItem> out(items.size());
    for (std::size_t k = 0; k < items.size(); ++k) {
      out[k].hypothesis = tokenize(items[k].hypothesis);
      for (const auto& reference : items[k].references) out[k].references.push_back(tokenize(reference));
    }
    return out;
  };
  const auto wants = [&](const char* name) { return std::find(metrics.begin(), metrics.end(), name) != metrics.end(); };
  std::map<std::string, double> scores;
  if (wants("bleu") || wants("nist")) {
    const auto items_13a =
        tokenized([&](const std::string& text) { return tokenize_13a(text, !options.case_sensitive); });
    if (wants("bleu")) scores["bleu"] = corpus_bleu(items_13a);
    if (wants("nist")) scores["nist"] = corpus_nist(items_13a);
  }
  if (wants("rouge_l") || wants("cider")) {
    const auto items_coco = tokenized([](const std::string& text) { return tokenize_coco(text); });
    if (wants("rouge_l")) scores["rouge_l"] = corpus_rouge_l(items_coco);
    if (wants("cider")) scores["cider"] = corpus_cider_d(items_coco);
  }
  if (wants("ter"))
    scores["ter"] =
        corpus_ter(tokenized([&](const std::string& text) { return tokenize_ter(text, options.case_sensitive); }));
  return scores;
}

}  // namespace dsee
