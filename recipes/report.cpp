// dsee report: see report.h.
#include "recipes/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <vector>

#include "base/error.h"
#include "base/files.h"
#include "recipes/run_dir.h"

namespace dsee {

namespace fs = std::filesystem;

std::vector<fs::path> report_run_folders(const fs::path& root, const std::string& marker) {
  std::vector<fs::path> found;
  if (fs::exists(root / marker)) found.push_back(root);
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (it.depth() > 1) it.disable_recursion_pending();
    if (it->is_directory() && fs::exists(it->path() / marker)) found.push_back(it->path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string report_text(const fs::path& root, ReportFormat format) {
  // Runs: DIR itself and its subfolders, two levels deep, with a summary.json
  // (a run.compare folder's own summary.json only lists its arms, which are rows of their own).
  const std::vector<fs::path> runs = report_run_folders(root, RunDir(root).summary().filename().string());
  DSEE_CHECK(!runs.empty(), "no run under '{}' has a summary.json (is the sweep finished?)", root.string());
  // Columns: run, then every scalar of the summaries (nested objects as dotted names), first-seen order.
  std::vector<std::string> columns = {"run"};
  std::vector<std::map<std::string, std::string>> rows;
  nlohmann::json all = nlohmann::json::array();
  for (const auto& dir : runs) {
    const nlohmann::json summary = file_read_json(RunDir(dir).summary(), "delete it to re-run that run");
    // A run.compare index (its arms' list) is not a run: its arms are, in their own folders.
    if (summary.is_object() && summary.contains("arms")) continue;
    std::map<std::string, std::string> row;
    row["run"] = fs::relative(dir, root).string();
    if (row["run"] == ".") row["run"] = dir.filename().string();
    const auto flat = summary.flatten();
    for (const auto& [pointer, value] : flat.items()) {
      std::string name = pointer.substr(1);
      std::replace(name.begin(), name.end(), '/', '.');
      if (std::find(columns.begin(), columns.end(), name) == columns.end()) columns.push_back(name);
      row[name] = value.is_string() ? value.get<std::string>() : value.dump();
    }
    rows.push_back(row);
    all.push_back({{"run", row["run"]}, {"summary", summary}});
  }
  DSEE_CHECK(!rows.empty(), "no run under '{}' has a summary.json of a finished run (is it finished?)", root.string());
  if (format == ReportFormat::json) return all.dump(2) + "\n";
  const bool tsv = format == ReportFormat::tsv;
  std::vector<std::size_t> width(columns.size());
  for (std::size_t c = 0; c < columns.size(); ++c) {
    width[c] = columns[c].size();
    for (auto& row : rows) width[c] = std::max(width[c], row[columns[c]].size());
  }
  std::string out;
  const auto print_row = [&](const std::function<std::string(std::size_t)>& cell) {
    std::string line;
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const auto text = cell(c);
      line += tsv ? (c ? "\t" : "") + text
                  : (c ? "  " : "") + text + std::string(width[c] - std::min(width[c], text.size()), ' ');
    }
    while (!tsv && !line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  print_row([&](std::size_t c) { return columns[c]; });
  for (auto& row : rows)
    print_row([&](std::size_t c) { return row.count(columns[c]) ? row[columns[c]] : std::string("-"); });
  return out;
}

}  // namespace dsee
