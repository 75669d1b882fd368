// Token-id lists from JSON: the input file of `dsee forward` (IDS.json,
// docs/models.md). Either a list of token-id lists (ragged), or an object
//   {"input_ids": [[...], ...], "token_type_ids": [[...], ...]}
// whose token_type_ids (optional) has the lengths of input_ids. Every list
// is non-empty and every id a non-negative integer; whether an id fits the
// model's vocabulary is the caller's check.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dsee {

using IdLists = std::vector<std::vector<std::int64_t>>;

struct IdListsInput {
  IdLists input_ids;
  IdLists token_type_ids;  // empty when the file has none
};

// Parses `text`, the file's contents; dsee::Error names `source` and what is
// wrong ("not valid JSON: …", "input_ids[2] holds -1, not a token id").
IdListsInput id_lists_parse(std::string_view text, const std::string& source);

}  // namespace dsee
