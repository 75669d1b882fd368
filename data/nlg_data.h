// Data-to-text task files (docs/nlg-data.md): readers for E2E, WebNLG and
// DART in the formats users have on disk, turned into (context, completion)
// pairs as the LoRA NLG examples' converters make them, and grouped by
// context for scoring.
//
// Formats (NlgFormat):
//   e2e_lines     LoRA's E2E train.txt / valid.txt / test.txt: one
//                 `context||completion` per line
//   e2e_csv       the E2E challenge CSV: header `mr,ref`, RFC 4180 quoting
//   webnlg_json   the WebNLG 2017 challenge JSON LoRA reads ({"entries": ...})
//   webnlg_xml    the WebNLG 2017 challenge XML (<entry category=...>)
//   dart_json     DART's JSON list of {tripleset, annotations}
//   jsonl         LoRA's converted files: one {"context", "completion"
//                 [, "cate"]} object per line
// Triples become `subject : property : object`, joined by ` | ` (DART: the
// relation lower-cased); WebNLG keeps only lexicalisations whose comment is
// "good" and records the entry's category and whether it is one of the ten
// seen categories. Errors name the file, the line or entry and the field.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace dsee {

enum class NlgFormat { automatic, e2e_lines, e2e_csv, webnlg_json, webnlg_xml, dart_json, jsonl };

// "auto", "e2e", "e2e-csv", "webnlg-json", "webnlg-xml", "dart", "jsonl";
// dsee::Error listing the names otherwise.
NlgFormat nlg_format_from_name(const std::string& name);
const char* nlg_format_name(NlgFormat format);
// The format of `file`: .csv → e2e_csv, .xml → webnlg_xml, .jsonl → jsonl;
// .json by its top level ({"entries": ...} → webnlg_json, a list →
// dart_json); otherwise by its first non-blank character ('<' → XML, '{' →
// jsonl, anything else → e2e_lines). dsee::Error when the file cannot be read.
NlgFormat nlg_detect_format(const std::filesystem::path& file);

// One training pair. `seen` is set for WebNLG (the category is one of the
// ten of the training set) and for jsonl lines carrying "cate".
struct NlgExample {
  std::string context;
  std::string completion;
  std::string category;  // WebNLG only
  std::optional<bool> seen;
};

// The examples of `file` in file order (one per reference). Text is
// well-formed UTF-8 (invalid bytes repaired to U+FFFD). Throws dsee::Error
// on a malformed file or one without a single example.
std::vector<NlgExample> nlg_read(const std::filesystem::path& file, NlgFormat format = NlgFormat::automatic);

// The WebNLG 2017 categories of the training set (Airport, Astronaut, ...).
bool webnlg_is_seen_category(const std::string& category);

// One context with every reference it has, for decoding and scoring.
struct NlgItem {
  std::string context;
  std::vector<std::string> references;  // file order
  std::string category;                 // of the context's first example
  std::optional<bool> seen;
};

// Examples with the same context string become one item; items in the order
// their context first appears.
std::vector<NlgItem> nlg_group(const std::vector<NlgExample>& examples);

}  // namespace dsee
