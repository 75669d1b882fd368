// Unicode lower-casing: see unicode_case.h.
#include "base/unicode_case.h"

#include <utf8proc.h>

namespace dsee::unicode {

void append_lower(std::u32string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
  } else if (c == 0x130) {
    // The one unconditional full lower-case mapping longer than one code
    // point (SpecialCasing.txt); utf8proc has simple mappings only.
    out.push_back('i');
    out.push_back(0x307);
  } else {
    out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
  }
}

}  // namespace dsee::unicode
