// Fuzz target: an E2E / WebNLG / DART file (data/nlg_data.h) and the XML
// reader under it. The first byte picks the format (automatic, e2e,
// e2e-csv, webnlg-json, webnlg-xml, dart, jsonl) and the file's extension
// (.txt, .csv, .json, .xml, .jsonl: what automatic detection sees); the
// rest is the file. An accepted file must give well-formed UTF-8 text, a
// seen flag exactly where the format has one, and items that partition the
// examples by context.
#include "data/nlg_data.h"

#include <set>

#include "base/error.h"
#include "data/unicode.h"
#include "fuzz_target.h"

namespace {

bool well_formed(std::string text) { return dsee::unicode::utf8_repair(text) == 0; }

}  // namespace

DSEE_FUZZ_TARGET(nlg_data) {
  if (size == 0) return 0;
  static const dsee::NlgFormat formats[] = {
      dsee::NlgFormat::automatic,  dsee::NlgFormat::e2e_lines, dsee::NlgFormat::e2e_csv, dsee::NlgFormat::webnlg_json,
      dsee::NlgFormat::webnlg_xml, dsee::NlgFormat::dart_json, dsee::NlgFormat::jsonl};
  static const char* const extensions[] = {".txt", ".csv", ".json", ".xml", ".jsonl"};
  const dsee::NlgFormat format = formats[data[0] % 7];
  const auto path = dsee_fuzz::scratch_folder() / (std::string("data") + extensions[(data[0] / 7) % 5]);
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data + 1, size - 1));
  try {
    const std::vector<dsee::NlgExample> examples = dsee::nlg_read(path, format);
    const dsee::NlgFormat read_as = format == dsee::NlgFormat::automatic ? dsee::nlg_detect_format(path) : format;
    dsee_fuzz::require(!examples.empty());
    for (const dsee::NlgExample& e : examples) {
      dsee_fuzz::require(well_formed(e.context) && well_formed(e.completion) && well_formed(e.category));
      const bool webnlg = read_as == dsee::NlgFormat::webnlg_json || read_as == dsee::NlgFormat::webnlg_xml;
      if (webnlg) dsee_fuzz::require(e.seen == dsee::webnlg_is_seen_category(e.category));
      if (!webnlg && read_as != dsee::NlgFormat::jsonl) dsee_fuzz::require(!e.seen.has_value() && e.category.empty());
      if (read_as == dsee::NlgFormat::e2e_lines) dsee_fuzz::require(!e.context.empty() && !e.completion.empty());
    }
    const std::vector<dsee::NlgItem> items = dsee::nlg_group(examples);
    std::set<std::string> contexts;
    std::size_t references = 0;
    for (const dsee::NlgItem& item : items) {
      dsee_fuzz::require(contexts.insert(item.context).second && !item.references.empty());
      references += item.references.size();
    }
    dsee_fuzz::require(references == examples.size());
  } catch (const dsee::Error&) {
  }
  return 0;
}
