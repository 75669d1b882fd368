// Stop ids and completion text of generated tokens: see nlg_text.h.
#include "data/nlg_text.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "base/error.h"
#include "base/files.h"

namespace dsee {

std::vector<std::int64_t> nlg_stop_ids(const std::filesystem::path& model_dir, const Tokenizer& tokenizer) {
  std::vector<std::int64_t> ids;
  const auto config = file_read_json(model_dir / "config.json");
  if (const auto it = config.find("eos_token_id"); it != config.end()) {
    if (it->is_number_integer()) ids.push_back(it->get<std::int64_t>());
    if (it->is_array())
      for (const auto& id : *it)
        if (id.is_number_integer()) ids.push_back(id.get<std::int64_t>());
  }
  if (ids.empty())
    if (const auto id = tokenizer.token_id("<|endoftext|>")) ids.push_back(*id);
  DSEE_CHECK(!ids.empty(),
             "{}: neither config.json's eos_token_id nor the tokenizer's <|endoftext|> names an end-of-text token; "
             "give the ids explicitly",
             model_dir.string());
  const auto blank_line = tokenizer.tokenize("\n\n");
  if (blank_line.size() == 1 && std::find(ids.begin(), ids.end(), blank_line[0]) == ids.end())
    ids.push_back(blank_line[0]);
  return ids;
}

std::string nlg_completion_text(const Tokenizer& tokenizer, std::vector<std::int64_t> ids,
                                const std::vector<std::int64_t>& stop_ids) {
  if (!ids.empty() && std::find(stop_ids.begin(), stop_ids.end(), ids.back()) != stop_ids.end()) ids.pop_back();
  std::string text = tokenizer.decode(ids);
  if (const auto blank = text.find("\n\n"); blank != std::string::npos) text.resize(blank);
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\r', ' ');
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

}  // namespace dsee
