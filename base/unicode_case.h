// Unicode lower-casing, one code point at a time: what both the tokenizers
// (BERT's lower-casing, DART's relations: data/unicode.h, data/nlg_data.h)
// and the scorers (BLEU and TER lower-case as Python's str.lower():
// core/train/nlg_scores.h) take from Unicode's case tables, kept here so the
// two agree by construction. Character data from utf8proc.
#pragma once

#include <string>

namespace dsee::unicode {

// Appends the full lower-case mapping of code point `c` to `out`: utf8proc's
// simple mapping, except U+0130 (İ), the one unconditional mapping of
// SpecialCasing.txt longer than one code point, which becomes "i̇" (U+0069
// U+0307) as in Python. Context-dependent rules (the Greek final sigma) are
// not applied.
void append_lower(std::u32string& out, char32_t c);

}  // namespace dsee::unicode
