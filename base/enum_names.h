// The names of a closed set (an enum), one table read both ways: the name
// that files, logs and recipes carry, and the value a name stands for.
//
//   constexpr EnumName<Color> kColors[] = {{Color::red, "red"}, {Color::blue, "blue"}};
//   enum_name(kColors, Color::red)    "red"
//   enum_from_name(kColors, "blue")   Color::blue; std::nullopt for a name
//                                     outside the table (the caller says
//                                     what is allowed, in its own words)
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "base/error.h"

namespace dsee {

template <class E>
struct EnumName {
  E value;
  const char* name;
};

template <class E, std::size_t N>
const char* enum_name(const EnumName<E> (&names)[N], E value) {
  for (const auto& entry : names)
    if (entry.value == value) return entry.name;
  DSEE_ASSERT(false, "value {} is missing from its name table", static_cast<int>(value));
  return "";
}

template <class E, std::size_t N>
std::optional<E> enum_from_name(const EnumName<E> (&names)[N], std::string_view name) {
  for (const auto& entry : names)
    if (name == entry.name) return entry.value;
  return std::nullopt;
}

}  // namespace dsee
