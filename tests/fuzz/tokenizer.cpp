// Fuzz target: a tokenizer folder (data/tokenizer.h) as other tools write
// it. The first byte picks the layout (0: tokenizer.json, 1: vocab.txt, 2:
// vocab.json + merges.txt); the rest, split at NUL bytes, are that layout's
// file(s), then tokenizer_config.json and special_tokens_map.json (absent
// when their part is missing or empty). An accepted folder must encode any
// text, single and paired, within max_length, with the three id lists of
// equal length and every id non-negative, and byte-level BPE must decode
// the ids it made.
#include "data/tokenizer.h"

#include <string>
#include <vector>

#include "base/error.h"
#include "fuzz_target.h"

namespace {

void check_encoding(const dsee::Encoding& encoding, std::size_t max_length) {
  dsee_fuzz::require(encoding.input_ids.size() <= max_length &&
                     encoding.token_type_ids.size() == encoding.input_ids.size() &&
                     encoding.attention_mask.size() == encoding.input_ids.size());
  for (const std::int64_t id : encoding.input_ids) dsee_fuzz::require(id >= 0);
}

}  // namespace

DSEE_FUZZ_TARGET(tokenizer) {
  if (size == 0) return 0;
  static const char* const layouts[3][2] = {
      {"tokenizer.json", nullptr}, {"vocab.txt", nullptr}, {"vocab.json", "merges.txt"}};
  const auto& layout = layouts[data[0] % 3];
  std::vector<std::string> names = {layout[0]};
  if (layout[1] != nullptr) names.emplace_back(layout[1]);
  names.emplace_back("tokenizer_config.json");
  names.emplace_back("special_tokens_map.json");

  const std::filesystem::path folder = dsee_fuzz::scratch_folder() / "tokenizer";
  std::filesystem::create_directories(folder);
  for (const char* name :
       {"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    std::filesystem::remove(folder / name);
  const std::string_view rest = dsee_fuzz::as_text(data + 1, size - 1);
  std::size_t start = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::size_t end = std::min(rest.find('\0', start), rest.size());
    const std::string_view part = start <= rest.size() ? rest.substr(start, end - start) : std::string_view();
    if (i < (layout[1] != nullptr ? 2u : 1u) || !part.empty()) dsee_fuzz::write_bytes(folder / names[i], part);
    start = end + 1;
  }

  try {
    const dsee::Tokenizer tokenizer = dsee::Tokenizer::load(folder);
    const std::string text =
        "Hello, world! [SEP] <|endoftext|> na\xc3\xafve caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x98\x80";
    dsee::EncodeOptions options;
    options.max_length = 12;
    check_encoding(tokenizer.encode(text, options), 12);
    check_encoding(tokenizer.encode_pair(text, "a second text", options), 12);
    const std::vector<std::int64_t> ids = tokenizer.tokenize(text);
    for (const std::int64_t id : ids) dsee_fuzz::require(id >= 0);
    if (tokenizer.kind() == dsee::TokenizerKind::byte_level_bpe) tokenizer.decode(ids);
  } catch (const dsee::Error&) {
  }
  return 0;
}
