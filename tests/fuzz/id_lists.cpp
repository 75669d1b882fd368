// Fuzz target: the token-id lists of `dsee forward` (data/id_lists.h). An
// accepted file must give non-empty lists of non-negative ids, and token
// types (when present) list for list as long as the ids.
#include "data/id_lists.h"

#include "base/error.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(id_lists) {
  try {
    const dsee::IdListsInput input = dsee::id_lists_parse(dsee_fuzz::as_text(data, size), "ids.json");
    dsee_fuzz::require(!input.input_ids.empty());
    for (const auto& ids : input.input_ids) {
      dsee_fuzz::require(!ids.empty());
      for (const std::int64_t id : ids) dsee_fuzz::require(id >= 0);
    }
    if (!input.token_type_ids.empty()) {
      dsee_fuzz::require(input.token_type_ids.size() == input.input_ids.size());
      for (std::size_t i = 0; i < input.input_ids.size(); ++i)
        dsee_fuzz::require(input.token_type_ids[i].size() == input.input_ids[i].size());
    }
  } catch (const dsee::Error&) {
  }
  return 0;
}
