// The token → id map every tokenizer model uses: a hash map that looks up a
// std::string_view without building a std::string (C++20 heterogeneous lookup).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace dsee {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

using VocabMap = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;

inline int64_t vocab_find(const VocabMap& vocab, std::string_view token) {
  const auto it = vocab.find(token);
  return it == vocab.end() ? -1 : it->second;
}

}  // namespace dsee
