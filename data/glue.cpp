// GLUE readers and encoding: see glue.h.
//
// Note [GLUE columns]
// ~~~~~~~~~~~~~~~~~~~
// The files of the GLUE distribution differ in their columns (MNLI carries
// parses and per-annotator labels, STS-B genre and year, MRPC ids), so the
// reader looks the text and label columns up by their header names rather
// than by position, and requires every line to have the header's number of
// fields: a stray tab or a cut line shows up as a field-count error on its
// own line instead of as a silently shifted label. CoLA alone has no header;
// its four columns are fixed. The MRPC files of the download script start
// with a UTF-8 byte-order mark, which is dropped before the header is read.
#include "data/glue.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <optional>

#include "base/error.h"
#include "data/unicode.h"

namespace dsee {
namespace {

struct Columns {
  std::string first, second, label;  // header names; second empty for single-sentence tasks
};

struct TaskTable {
  GlueFileSpec spec;
  Columns columns;
};

const std::vector<TaskTable>& glue_tables() {
  static const std::vector<std::string> binary = {"0", "1"};
  static const std::vector<std::string> entailment = {"entailment", "not_entailment"};
  static const std::vector<TaskTable> tables = {
      {{"cola", 2, binary, {"dev.tsv"}}, {"", "", ""}},
      {{"sst2", 2, binary, {"dev.tsv"}}, {"sentence", "", "label"}},
      {{"mrpc", 2, binary, {"dev.tsv"}}, {"#1 String", "#2 String", "Quality"}},
      {{"qqp", 2, binary, {"dev.tsv"}}, {"question1", "question2", "is_duplicate"}},
      {{"stsb", 1, {}, {"dev.tsv"}}, {"sentence1", "sentence2", "score"}},
      {{"mnli", 3, {"contradiction", "entailment", "neutral"}, {"dev_matched.tsv", "dev_mismatched.tsv"}},
       {"sentence1", "sentence2", "gold_label"}},
      {{"qnli", 2, entailment, {"dev.tsv"}}, {"question", "sentence", "label"}},
      {{"rte", 2, entailment, {"dev.tsv"}}, {"sentence1", "sentence2", "label"}},
      {{"wnli", 2, binary, {"dev.tsv"}}, {"sentence1", "sentence2", "label"}},
  };
  return tables;
}

std::string folded(const std::string& name) {
  std::string out;
  for (const char c : name)
    if (c != '-' && c != '_') out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const TaskTable* find_table(const std::string& task) {
  const auto key = folded(task);
  for (const auto& table : glue_tables())
    if (table.spec.name == key) return &table;
  return nullptr;
}

const TaskTable& table_of(const std::string& task) {
  const auto* table = find_table(task);
  if (table) return *table;
  std::vector<std::string> names;
  for (const auto& t : glue_tables()) names.push_back(t.spec.name);
  throw Error(fmt::format("unknown GLUE task '{}'; the tasks are {}", task, fmt::join(names, ", ")));
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  while (true) {
    const auto tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return fields;
    start = tab + 1;
  }
}

std::size_t column_index(const std::vector<std::string>& header, const std::string& name,
                         const std::filesystem::path& file, const std::string& task) {
  const auto it = std::find(header.begin(), header.end(), name);
  DSEE_CHECK(it != header.end(), "{}: line 1: the {} header has no column '{}' (columns: {}); is this a {} file?",
             file.string(), task, name, fmt::join(header, ", "), task);
  return static_cast<std::size_t>(it - header.begin());
}

}  // namespace

const GlueFileSpec& glue_file_spec(const std::string& task) { return table_of(task).spec; }

bool glue_is_task(const std::string& task) { return find_table(task) != nullptr; }

GlueExamples glue_read(const std::string& task, const std::filesystem::path& file) {
  const auto& table = table_of(task);
  const auto& spec = table.spec;
  std::ifstream in(file, std::ios::binary);
  DSEE_CHECK(in.good(), "cannot open {} file '{}'; a GLUE task folder holds train.tsv and {}", spec.name, file.string(),
             fmt::join(spec.dev_files, " and "));

  // Column positions: fixed for CoLA, by header name for the others.
  std::size_t fields_expected = 4, first = 3, label = 1;
  std::optional<std::size_t> second;
  std::string label_column = "label (column 2)";
  GlueExamples out;
  std::string line;
  std::int64_t line_number = 0;
  bool header_read = spec.name == "cola";
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
    if (line.empty()) continue;
    unicode::utf8_repair(line);
    auto fields = split_tabs(line);
    if (!header_read) {
      header_read = true;
      fields_expected = fields.size();
      first = column_index(fields, table.columns.first, file, spec.name);
      if (!table.columns.second.empty()) second = column_index(fields, table.columns.second, file, spec.name);
      label = column_index(fields, table.columns.label, file, spec.name);
      label_column = fmt::format("'{}' (column {})", table.columns.label, label + 1);
      continue;
    }
    DSEE_CHECK(fields.size() == fields_expected, "{}: line {}: {} tab-separated fields, the {} file has {} columns{}",
               file.string(), line_number, fields.size(), spec.name, fields_expected,
               spec.name == "cola" ? " (source, label, original mark, sentence; no header)" : " (its header's)");
    const std::string& value = fields[label];
    if (spec.num_labels == 1) {
      float score = 0.0f;
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), score);
      DSEE_CHECK(error == std::errc() && end == value.data() + value.size() && std::isfinite(score),
                 "{}: line {}: column {}: '{}' is not a number; STS-B scores are floats from 0 to 5", file.string(),
                 line_number, label_column, value);
      out.scores.push_back(score);
    } else {
      const auto it = std::find(spec.label_names.begin(), spec.label_names.end(), value);
      DSEE_CHECK(it != spec.label_names.end(), "{}: line {}: column {}: unknown label '{}'; {} labels are {}",
                 file.string(), line_number, label_column, value, spec.name, fmt::join(spec.label_names, ", "));
      out.labels.push_back(static_cast<std::int64_t>(it - spec.label_names.begin()));
    }
    out.first.push_back(std::move(fields[first]));
    if (second) out.second.push_back(std::move(fields[*second]));
  }
  DSEE_CHECK(header_read, "{}: the file is empty; expected the {} header line", file.string(), spec.name);
  DSEE_CHECK(!out.first.empty(), "{}: no examples after the header", file.string());
  return out;
}

GlueTensors glue_encode(const Tokenizer& tokenizer, const GlueExamples& examples, std::int64_t max_seq_length,
                        bool pad_to_max_length) {
  const auto special = static_cast<std::int64_t>(tokenizer.special_tokens_added(!examples.second.empty()));
  DSEE_CHECK(max_seq_length > special, "task.max_seq_length ({}) must exceed the {} special tokens of an input",
             max_seq_length, special);
  EncodeOptions options;
  options.max_length = static_cast<std::size_t>(max_seq_length);
  options.truncation = Truncation::longest_first;
  options.padding = pad_to_max_length ? Padding::max_length : Padding::longest;
  const auto encodings = tokenizer.encode_batch(examples.first, examples.second, options);
  const auto n = static_cast<std::int64_t>(encodings.size());
  const auto seq = static_cast<std::int64_t>(encodings.front().input_ids.size());
  auto ids = at::empty({n, seq}, at::kLong), mask = at::empty({n, seq}, at::kLong),
       types = at::empty({n, seq}, at::kLong);
  auto* id = ids.data_ptr<std::int64_t>();
  auto* m = mask.data_ptr<std::int64_t>();
  auto* t = types.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& e = encodings[static_cast<std::size_t>(i)];
    DSEE_ASSERT(static_cast<std::int64_t>(e.input_ids.size()) == seq, "row {} has {} ids, the batch {}", i,
                e.input_ids.size(), seq);
    std::copy(e.input_ids.begin(), e.input_ids.end(), id + i * seq);
    std::copy(e.attention_mask.begin(), e.attention_mask.end(), m + i * seq);
    std::copy(e.token_type_ids.begin(), e.token_type_ids.end(), t + i * seq);
  }
  GlueTensors out;
  out.input_ids = ids;
  out.attention_mask = mask;
  if (tokenizer.kind() == TokenizerKind::wordpiece) out.token_type_ids = types;
  out.labels =
      examples.scores.empty() ? at::tensor(examples.labels, at::kLong) : at::tensor(examples.scores, at::kFloat);
  return out;
}

}  // namespace dsee
