// Tensor shapes in error messages, written as "[2, 768]".
#pragma once

#include <c10/util/ArrayRef.h>
#include <fmt/format.h>

#include <cstdint>
#include <string>

namespace dsee {

inline std::string shape_text(c10::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace dsee
