// E2E, WebNLG and DART readers: see nlg_data.h and docs/nlg-data.md.
//
// Note [LoRA's conversions]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// The GPT-2 numbers of the LoRA and DSEE papers come from the LoRA NLG
// examples, whose converters (examples/NLG/src/format_converting_*.py) turn
// each dataset into (context, completion) pairs:
//   E2E     each line stripped of surrounding white space and cut at "||";
//   WebNLG  the entry's modifiedtripleset, each triple written
//           "subject : property : object" verbatim (underscores and quotes
//           kept), triples joined by " | "; one pair per lexicalisation whose
//           comment is "good"; the category is "seen" when it is one of the
//           ten training categories;
//   DART    the tripleset written the same way with the relation
//           lower-cased; one pair per annotation.
// The readers reproduce these strings byte for byte. Where the converters
// would fail or lose text, the readers refuse or keep it instead: a line
// without "||" is an error (the converter raises IndexError), and a second
// "||" stays part of the completion (the converter would drop what follows
// it). The official releases are mapped onto the same strings: WebNLG's
// XML <mtriple>s are cut at " | ", and an E2E challenge MR
// `name[The Eagle], eatType[pub]` becomes `name : The Eagle | Type : pub` with
// the attribute names of LoRA's files (eatType → Type, priceRange → price,
// familyFriendly → family friendly). LoRA's E2E text is also tokenised
// ("£ 30 ."), the challenge CSV is not; the readers keep each as it is.
#include "data/nlg_data.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <unordered_map>

#include "base/error.h"
#include "base/files.h"
#include "data/nlg_xml.h"
#include "data/unicode.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::array<std::pair<NlgFormat, const char*>, 7> kFormatNames = {{
    {NlgFormat::automatic, "auto"},
    {NlgFormat::e2e_lines, "e2e"},
    {NlgFormat::e2e_csv, "e2e-csv"},
    {NlgFormat::webnlg_json, "webnlg-json"},
    {NlgFormat::webnlg_xml, "webnlg-xml"},
    {NlgFormat::dart_json, "dart"},
    {NlgFormat::jsonl, "jsonl"},
}};

// The file's text: byte-order mark dropped, invalid UTF-8 repaired.
std::string read_text(const fs::path& file) {
  std::string text = file_read_text(file);
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
  unicode::utf8_repair(text);
  return text;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view strip(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Python's str.lower(): the full Unicode lower-case mapping.
std::string lower_unicode(const std::string& s) {
  std::u32string lowered;
  for (const char32_t c : unicode::utf8_decode(s)) unicode::append_lower(lowered, c);
  return unicode::utf8_encode(lowered);
}

std::string triple_text(const std::string& subject, const std::string& property, const std::string& object) {
  return fmt::format("{} : {} : {}", subject, property, object);
}

// ---------------------------------------------------------------- E2E lines

std::vector<NlgExample> read_e2e_lines(const fs::path& file, const std::string& text) {
  std::vector<NlgExample> out;
  std::size_t start = 0, line_number = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_number;
    const std::string_view line = strip(std::string_view(text).substr(start, end - start));
    start = end + 1;
    if (line.empty()) continue;
    const std::size_t bar = line.find("||");
    DSEE_CHECK(bar != std::string_view::npos,
               "{}: line {}: no '||' between the context and the completion; E2E lines read "
               "'name : X | Type : Y||The sentence.' (is this a CSV or JSON file? pass its format)",
               file.string(), line_number);
    NlgExample e;
    e.context = std::string(line.substr(0, bar));
    e.completion = std::string(line.substr(bar + 2));
    DSEE_CHECK(!strip(e.context).empty(), "{}: line {}: the context before '||' is empty", file.string(), line_number);
    DSEE_CHECK(!strip(e.completion).empty(), "{}: line {}: the completion after '||' is empty", file.string(),
               line_number);
    out.push_back(std::move(e));
  }
  return out;
}

// ---------------------------------------------------------------- E2E CSV

struct CsvRecord {
  std::vector<std::string> fields;
  std::size_t line = 0;  // where the record starts
};

// RFC 4180: fields separated by ',', records by CRLF or LF; a quoted field
// may hold ',', line breaks and '""' for a quote. Blank lines are skipped.
std::vector<CsvRecord> parse_csv(const fs::path& file, const std::string& text) {
  std::vector<CsvRecord> records;
  std::size_t i = 0, line = 1;
  while (i < text.size()) {
    if (text[i] == '\n' || text[i] == '\r') {  // blank line
      if (text[i] == '\n') ++line;
      ++i;
      continue;
    }
    CsvRecord record;
    record.line = line;
    while (true) {
      std::string field;
      if (i < text.size() && text[i] == '"') {
        const std::size_t opened = line;
        ++i;
        while (true) {
          DSEE_CHECK(i < text.size(),
                     "{}: line {}: the quoted field opened on line {} is never closed (a '\"' is missing)",
                     file.string(), line, opened);
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          field += text[i++];
        }
        DSEE_CHECK(
            i >= text.size() || text[i] == ',' || text[i] == '\n' || text[i] == '\r',
            "{}: line {}: text after the closing quote of field {}; inside a quoted field write a quote as '\"\"'",
            file.string(), line, record.fields.size() + 1);
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          DSEE_CHECK(text[i] != '"',
                     "{}: line {}: field {} holds a '\"' but is not quoted; quote the field and write the "
                     "quote as '\"\"'",
                     file.string(), line, record.fields.size() + 1);
          field += text[i++];
        }
      }
      record.fields.push_back(std::move(field));
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '\r') ++i;
      if (i < text.size() && text[i] == '\n') {
        ++i;
        ++line;
      }
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

// LoRA's E2E files name three attributes differently from the challenge's MRs.
std::string e2e_attribute_name(const std::string& name) {
  static const std::map<std::string, std::string> renamed = {
      {"eatType", "Type"}, {"priceRange", "price"}, {"familyFriendly", "family friendly"}};
  const auto it = renamed.find(name);
  return it == renamed.end() ? name : it->second;
}

// "name[The Eagle], eatType[pub]" → "name : The Eagle | Type : pub".
std::string e2e_context_of_mr(const fs::path& file, std::size_t line, const std::string& mr) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  const auto fail = [&](const std::string& what) {
    throw Error(
        fmt::format("{}: line {}: field 'mr': {} in '{}'; a meaning representation reads "
                    "'name[The Eagle], eatType[pub], ...'",
                    file.string(), line, what, mr));
  };
  while (true) {
    while (i < mr.size() && is_space(mr[i])) ++i;
    if (i >= mr.size()) break;
    const std::size_t open = mr.find('[', i);
    if (open == std::string::npos) fail(fmt::format("no '[' after attribute text '{}'", mr.substr(i)));
    const std::string name(strip(std::string_view(mr).substr(i, open - i)));
    if (name.empty()) fail(fmt::format("an attribute without a name at character {}", open + 1));
    if (name.find_first_of("],") != std::string::npos) fail(fmt::format("a malformed attribute name '{}'", name));
    const std::size_t close = mr.find(']', open + 1);
    if (close == std::string::npos) fail(fmt::format("the value of '{}' has no closing ']'", name));
    parts.push_back(fmt::format("{} : {}", e2e_attribute_name(name), strip(mr.substr(open + 1, close - open - 1))));
    i = close + 1;
    while (i < mr.size() && is_space(mr[i])) ++i;
    if (i >= mr.size()) break;
    if (mr[i] != ',') fail(fmt::format("'{}' after the value of '{}', expected ','", mr[i], name));
    ++i;
  }
  if (parts.empty()) fail("no attribute");
  return fmt::format("{}", fmt::join(parts, " | "));
}

std::vector<NlgExample> read_e2e_csv(const fs::path& file, const std::string& text) {
  const std::vector<CsvRecord> records = parse_csv(file, text);
  DSEE_CHECK(!records.empty(), "{}: the file is empty; expected the header 'mr,ref'", file.string());
  std::optional<std::size_t> mr, ref;
  const auto& header = records.front().fields;
  for (std::size_t c = 0; c < header.size(); ++c) {
    const std::string name = lower_ascii(std::string(strip(header[c])));
    if (name == "mr") mr = c;
    if (name == "ref") ref = c;
  }
  DSEE_CHECK(mr && ref, "{}: line 1: the header has no {} column (columns: {}); an E2E challenge CSV starts 'mr,ref'",
             file.string(), mr ? "'ref'" : "'mr'", fmt::join(header, ", "));
  std::vector<NlgExample> out;
  for (std::size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    DSEE_CHECK(record.fields.size() == header.size(),
               "{}: line {}: {} comma-separated fields, the header has {}; quote fields that hold commas",
               file.string(), record.line, record.fields.size(), header.size());
    NlgExample e;
    e.context = e2e_context_of_mr(file, record.line, record.fields[*mr]);
    e.completion = std::string(strip(record.fields[*ref]));
    DSEE_CHECK(!e.completion.empty(), "{}: line {}: field 'ref' is empty", file.string(), record.line);
    out.push_back(std::move(e));
  }
  return out;
}

// ---------------------------------------------------------------- JSON

// The line of byte `offset` in `text`.
std::size_t line_of(const std::string& text, std::size_t offset) {
  offset = std::min(offset, text.size());
  return 1 +
         static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
}

json parse_json(const fs::path& file, const std::string& text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("{}: line {}: not valid JSON ({}); expected {}", file.string(), line_of(text, e.byte),
                            e.what(), what));
  } catch (const json::exception& e) {  // out_of_range: a number beyond double
    throw Error(fmt::format("{}: not valid JSON ({}); expected {}", file.string(), e.what(), what));
  }
}

// `object[key]` as a string; dsee::Error naming `where` and the field otherwise.
const std::string& string_field(const json& object, const char* key, const std::string& where) {
  DSEE_CHECK(object.is_object(), "{}: expected a JSON object, got {}", where, object.type_name());
  const auto it = object.find(key);
  DSEE_CHECK(it != object.end(), "{}: no field '{}'", where, key);
  DSEE_CHECK(it->is_string(), "{}: field '{}' is {}, expected a string", where, key, it->type_name());
  return it->get_ref<const std::string&>();
}

const json& array_field(const json& object, const char* key, const std::string& where) {
  DSEE_CHECK(object.is_object(), "{}: expected a JSON object, got {}", where, object.type_name());
  const auto it = object.find(key);
  DSEE_CHECK(it != object.end(), "{}: no field '{}'", where, key);
  DSEE_CHECK(it->is_array(), "{}: field '{}' is {}, expected a list", where, key, it->type_name());
  return *it;
}

// ---------------------------------------------------------------- WebNLG

struct WebnlgLexicalisation {
  std::string comment, text;
};

// The examples of one entry: one per lexicalisation commented "good".
void add_webnlg_entry(const std::string& category, const std::vector<std::string>& triples,
                      const std::vector<WebnlgLexicalisation>& lexicalisations, std::vector<NlgExample>& out) {
  const std::string context = fmt::format("{}", fmt::join(triples, " | "));
  for (const auto& lex : lexicalisations) {
    if (lex.comment != "good") continue;
    out.push_back({context, lex.text, category, webnlg_is_seen_category(category)});
  }
}

std::vector<NlgExample> read_webnlg_json(const fs::path& file, const std::string& text) {
  const json root = parse_json(file, text, "the WebNLG object {\"entries\": [...]}");
  const std::string top = file.string();
  const json& entries = array_field(root, "entries", top);
  std::vector<NlgExample> out;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::string where = fmt::format("{}: entries[{}]", top, i);
    const json& wrapper = entries[i];
    DSEE_CHECK(wrapper.is_object() && wrapper.size() == 1,
               "{}: expected an object with one key (the entry number, \"{}\"), got {}", where, i + 1,
               wrapper.is_object() ? fmt::format("{} keys", wrapper.size()) : std::string(wrapper.type_name()));
    const std::string at = fmt::format("{} (\"{}\")", where, wrapper.begin().key());
    const json& entry = wrapper.begin().value();
    const std::string& category = string_field(entry, "category", at);
    std::vector<std::string> triples;
    const json& tripleset = array_field(entry, "modifiedtripleset", at);
    for (std::size_t t = 0; t < tripleset.size(); ++t) {
      const std::string tw = fmt::format("{}: modifiedtripleset[{}]", at, t);
      triples.push_back(triple_text(string_field(tripleset[t], "subject", tw),
                                    string_field(tripleset[t], "property", tw),
                                    string_field(tripleset[t], "object", tw)));
    }
    DSEE_CHECK(!triples.empty(), "{}: field 'modifiedtripleset' is empty; every entry needs at least one triple", at);
    std::vector<WebnlgLexicalisation> lexicalisations;
    const json& lexs = array_field(entry, "lexicalisations", at);
    for (std::size_t l = 0; l < lexs.size(); ++l) {
      const std::string lw = fmt::format("{}: lexicalisations[{}]", at, l);
      lexicalisations.push_back({string_field(lexs[l], "comment", lw), string_field(lexs[l], "lex", lw)});
    }
    add_webnlg_entry(category, triples, lexicalisations, out);
  }
  return out;
}

std::vector<NlgExample> read_webnlg_xml(const fs::path& file, const std::string& text) {
  const XmlElement root = xml_parse(text, file.string());
  std::vector<const XmlElement*> entries;
  // <benchmark><entries><entry>...; a bare <entries> or <entry> root is accepted too.
  std::vector<const XmlElement*> stack = {&root};
  while (!stack.empty()) {
    const XmlElement* e = stack.back();
    stack.pop_back();
    if (e->name == "entry") {
      entries.push_back(e);
      continue;
    }
    for (auto it = e->children.rbegin(); it != e->children.rend(); ++it) stack.push_back(&*it);
  }
  DSEE_CHECK(!entries.empty(), "{}: no <entry> element; a WebNLG XML file holds <benchmark><entries><entry ...>",
             file.string());
  std::vector<NlgExample> out;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const XmlElement& entry = *entries[i];
    const std::string where =
        fmt::format("{}: line {}: entry {}{}", file.string(), entry.line, i + 1,
                    entry.attribute("eid") ? fmt::format(" (eid {})", *entry.attribute("eid")) : "");
    const auto category = entry.attribute("category");
    DSEE_CHECK(category, "{}: no attribute 'category'", where);
    const XmlElement* modified = entry.child("modifiedtripleset");
    DSEE_CHECK(modified, "{}: no <modifiedtripleset>", where);
    std::vector<std::string> triples;
    for (const XmlElement& m : modified->children) {
      if (m.name != "mtriple") continue;
      const std::string triple(strip(m.text));
      const std::size_t a = triple.find(" | ");
      const std::size_t b = a == std::string::npos ? a : triple.find(" | ", a + 3);
      DSEE_CHECK(b != std::string::npos && triple.find(" | ", b + 3) == std::string::npos,
                 "{}: line {}: <mtriple> '{}' is not 'subject | property | object'", where, m.line, triple);
      triples.push_back(triple_text(triple.substr(0, a), triple.substr(a + 3, b - a - 3), triple.substr(b + 3)));
    }
    DSEE_CHECK(!triples.empty(), "{}: <modifiedtripleset> holds no <mtriple>", where);
    std::vector<WebnlgLexicalisation> lexicalisations;
    for (const XmlElement& lex : entry.children) {
      if (lex.name != "lex") continue;
      const auto comment = lex.attribute("comment");
      DSEE_CHECK(comment,
                 "{}: line {}: <lex> has no attribute 'comment' (only comment=\"good\" lexicalisations are used)",
                 where, lex.line);
      // WebNLG 2017: the text is the <lex>'s own; later releases put it in <text>.
      const XmlElement* inner = lex.child("text");
      const std::string sentence(strip(inner ? inner->text : lex.text));
      DSEE_CHECK(!sentence.empty() || *comment != "good", "{}: line {}: <lex> has no text", where, lex.line);
      lexicalisations.push_back({*comment, sentence});
    }
    add_webnlg_entry(*category, triples, lexicalisations, out);
  }
  return out;
}

// ---------------------------------------------------------------- DART

std::vector<NlgExample> read_dart_json(const fs::path& file, const std::string& text) {
  const json root = parse_json(file, text, "DART's list of {\"tripleset\": ..., \"annotations\": ...}");
  DSEE_CHECK(root.is_array(), "{}: the top level is {}, expected DART's list of entries", file.string(),
             root.type_name());
  std::vector<NlgExample> out;
  for (std::size_t i = 0; i < root.size(); ++i) {
    const std::string where = fmt::format("{}: entry {}", file.string(), i);
    const json& tripleset = array_field(root[i], "tripleset", where);
    std::vector<std::string> triples;
    for (std::size_t t = 0; t < tripleset.size(); ++t) {
      const json& triple = tripleset[t];
      DSEE_CHECK(triple.is_array() && triple.size() == 3 &&
                     std::all_of(triple.begin(), triple.end(), [](const json& x) { return x.is_string(); }),
                 "{}: tripleset[{}] is {}, expected [subject, relation, object] strings", where, t, triple.dump());
      triples.push_back(triple_text(triple[0].get<std::string>(), lower_unicode(triple[1].get<std::string>()),
                                    triple[2].get<std::string>()));
    }
    DSEE_CHECK(!triples.empty(), "{}: field 'tripleset' is empty; every entry needs at least one triple", where);
    const std::string context = fmt::format("{}", fmt::join(triples, " | "));
    const json& annotations = array_field(root[i], "annotations", where);
    for (std::size_t a = 0; a < annotations.size(); ++a)
      out.push_back({context, string_field(annotations[a], "text", fmt::format("{}: annotations[{}]", where, a)), "",
                     std::nullopt});
  }
  return out;
}

// ---------------------------------------------------------------- jsonl

std::vector<NlgExample> read_jsonl(const fs::path& file, const std::string& text) {
  std::vector<NlgExample> out;
  std::size_t start = 0, line_number = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_number;
    const std::string_view line = strip(std::string_view(text).substr(start, end - start));
    start = end + 1;
    if (line.empty()) continue;
    const std::string where = fmt::format("{}: line {}", file.string(), line_number);
    json object;
    try {
      object = json::parse(line);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
      throw Error(fmt::format("{}: not valid JSON ({}); each line is {{\"context\": ..., \"completion\": ...}}", where,
                              e.what()));
    }
    NlgExample e{string_field(object, "context", where), string_field(object, "completion", where), "", std::nullopt};
    if (object.contains("cate")) {
      DSEE_CHECK(object["cate"].is_boolean(), "{}: field 'cate' is {}, expected true (seen) or false (unseen)", where,
                 object["cate"].dump());
      e.seen = object["cate"].get<bool>();
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

NlgFormat nlg_format_from_name(const std::string& name) {
  for (const auto& [format, text] : kFormatNames)
    if (name == text) return format;
  std::vector<std::string> names;
  names.reserve(kFormatNames.size());
  for (const auto& entry : kFormatNames) names.emplace_back(entry.second);
  throw Error(fmt::format("unknown data format '{}'; the formats are {}", name, fmt::join(names, ", ")));
}

const char* nlg_format_name(NlgFormat format) {
  for (const auto& [f, text] : kFormatNames)
    if (f == format) return text;
  DSEE_ASSERT(false, "NlgFormat {} has no name", static_cast<int>(format));
  return "";
}

NlgFormat nlg_detect_format(const fs::path& file) {
  const std::string extension = lower_ascii(file.extension().string());
  if (extension == ".csv") return NlgFormat::e2e_csv;
  if (extension == ".xml") return NlgFormat::webnlg_xml;
  if (extension == ".jsonl") return NlgFormat::jsonl;
  const std::string text = read_text(file);
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  const char lead = first == std::string::npos ? '\0' : text[first];
  if (lead == '<') return NlgFormat::webnlg_xml;
  if (extension == ".json") {
    if (lead == '[') return NlgFormat::dart_json;
    if (lead == '{' && text.find("\"entries\"") != std::string::npos) return NlgFormat::webnlg_json;
  }
  if (lead == '{') return NlgFormat::jsonl;
  if (lead == '[') return NlgFormat::dart_json;
  return NlgFormat::e2e_lines;
}

std::vector<NlgExample> nlg_read(const fs::path& file, NlgFormat format) {
  if (format == NlgFormat::automatic) format = nlg_detect_format(file);
  const std::string text = read_text(file);
  std::vector<NlgExample> out;
  switch (format) {
    case NlgFormat::e2e_lines:
      out = read_e2e_lines(file, text);
      break;
    case NlgFormat::e2e_csv:
      out = read_e2e_csv(file, text);
      break;
    case NlgFormat::webnlg_json:
      out = read_webnlg_json(file, text);
      break;
    case NlgFormat::webnlg_xml:
      out = read_webnlg_xml(file, text);
      break;
    case NlgFormat::dart_json:
      out = read_dart_json(file, text);
      break;
    case NlgFormat::jsonl:
      out = read_jsonl(file, text);
      break;
    case NlgFormat::automatic:
      DSEE_ASSERT(false, "format detection returned automatic");
  }
  DSEE_CHECK(!out.empty(), "{}: no examples in the file (read as {}){}", file.string(), nlg_format_name(format),
             format == NlgFormat::webnlg_json || format == NlgFormat::webnlg_xml
                 ? "; WebNLG keeps only lexicalisations with comment \"good\""
                 : "");
  return out;
}

bool webnlg_is_seen_category(const std::string& category) {
  static const std::array<const char*, 10> seen = {"Airport",         "Astronaut",  "Building", "City",
                                                   "ComicsCharacter", "Food",       "Monument", "SportsTeam",
                                                   "University",      "WrittenWork"};
  return std::any_of(seen.begin(), seen.end(), [&](const char* c) { return category == c; });
}

std::vector<NlgItem> nlg_group(const std::vector<NlgExample>& examples) {
  std::vector<NlgItem> items;
  std::unordered_map<std::string, std::size_t> index;
  for (const NlgExample& e : examples) {
    const auto [it, added] = index.emplace(e.context, items.size());
    if (added) items.push_back({e.context, {}, e.category, e.seen});
    items[it->second].references.push_back(e.completion);
  }
  return items;
}

}  // namespace dsee
