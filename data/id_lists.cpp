// Token-id lists from JSON (contract: id_lists.h).
#include "data/id_lists.h"

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace dsee {
namespace {

IdLists lists_of(const nlohmann::json& value, const std::string& what, const std::string& source) {
  DSEE_CHECK(value.is_array() && !value.empty(), "{}: {} must be a non-empty list of token-id lists", source, what);
  IdLists lists;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto& row = value[i];
    DSEE_CHECK(row.is_array() && !row.empty(), "{}: {}[{}] must be a non-empty list of token ids", source, what, i);
    std::vector<std::int64_t> ids;
    for (const auto& id : row) {
      DSEE_CHECK(id.is_number_integer() && id.get<std::int64_t>() >= 0, "{}: {}[{}] holds {}, not a token id", source,
                 what, i, id.dump());
      ids.push_back(id.get<std::int64_t>());
    }
    lists.push_back(std::move(ids));
  }
  return lists;
}

}  // namespace

IdListsInput id_lists_parse(std::string_view text, const std::string& source) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  const bool object = json.is_object();
  DSEE_CHECK(!object || json.contains("input_ids"), "{}: the object needs a key \"input_ids\"", source);
  IdListsInput input;
  input.input_ids = lists_of(object ? json["input_ids"] : json, "input_ids", source);
  if (object && json.contains("token_type_ids")) {
    const IdLists& ids = input.input_ids;
    IdLists& types = input.token_type_ids;
    types = lists_of(json["token_type_ids"], "token_type_ids", source);
    DSEE_CHECK(types.size() == ids.size(), "{}: token_type_ids has {} lists, input_ids {}", source, types.size(),
               ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      DSEE_CHECK(types[i].size() == ids[i].size(), "{}: token_type_ids[{}] has {} ids, input_ids[{}] {}", source, i,
                 types[i].size(), i, ids[i].size());
  }
  return input;
}

}  // namespace dsee
