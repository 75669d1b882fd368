// Unicode for the tokenizers: UTF-8 decoding with U+FFFD repair, the
// character classes the BERT and GPT-2 pre-tokenizers split on, and the BERT
// normalisation steps (NFD, accent stripping, lower-casing).
//
// Character data comes from utf8proc (Unicode 15 in Debian 12): a small C
// library with the general category, canonical decompositions, combining
// classes and case mappings, which is all the tokenizers need; ICU would
// bring locale machinery and a 30 MB data library for the same four tables.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/unicode_case.h"

namespace dsee::unicode {

// Replaces every maximal ill-formed subsequence of `bytes` by U+FFFD (the
// Unicode "substitution of maximal subparts" rule, the one Python's
// bytes.decode(errors="replace") and Rust's from_utf8_lossy follow).
// Returns the number of replacements made; `bytes` is unchanged when 0.
std::size_t utf8_repair(std::string& bytes);

// Decodes well-formed UTF-8 (run utf8_repair first on untrusted text).
std::u32string utf8_decode(std::string_view text);
void utf8_append(std::string& out, char32_t code_point);
std::string utf8_encode(std::u32string_view code_points);

// Length in bytes of the UTF-8 sequence that starts with `lead`.
inline int utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }
// Decodes the code point at text[i] (well-formed UTF-8) and advances i.
char32_t utf8_next(std::string_view text, std::size_t& i);

// White_Space, the set Rust's char::is_whitespace and Oniguruma's \s use:
// the separators Zs/Zl/Zp, U+0009..U+000D and U+0085.
bool is_whitespace(char32_t c);
bool is_letter(char32_t c);  // L*
bool is_number(char32_t c);  // Nd, Nl, No
// BERT's punctuation: every ASCII symbol or punctuation mark, and P*.
bool is_bert_punctuation(char32_t c);
// BERT's clean_text removes these: Cc except \t \n \r, Cf and Co (unassigned
// code points are kept, as the tokenizers library keeps them).
bool is_bert_control(char32_t c);
// The CJK ideograph blocks BERT splits out as words of their own.
bool is_cjk_ideograph(char32_t c);
bool is_nonspacing_mark(char32_t c);  // Mn

// Canonical decomposition with canonical ordering (NFD).
std::u32string nfd(std::u32string_view text);
// Lower-casing (append_lower) is base/unicode_case.h's, shared with the scorers.

}  // namespace dsee::unicode
