// dsee report: one table over the runs under a folder (a sweep's, or any
// folder of run directories), from each run's summary.json.
//
// The runs are the folder itself and its subfolders, two levels deep, that
// hold a summary.json, in sorted order; a run.compare folder's own
// summary.json only lists its arms, which are rows of their own. Columns:
// "run" (the path under the folder), then every scalar of the summaries
// (nested objects as dotted names) in first-seen order; a run without a
// column's value shows "-".
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dsee {

enum class ReportFormat { table, tsv, json };

// `root` and its subfolders, one and two levels below, that hold a file
// named `marker` ("summary.json", "config.toml"), in sorted order.
std::vector<std::filesystem::path> report_run_folders(const std::filesystem::path& root, const std::string& marker);

// The report as text: an aligned table, tab-separated values, or the
// summaries as one JSON array. dsee::Error when no finished run is found.
std::string report_text(const std::filesystem::path& dir, ReportFormat format);

}  // namespace dsee
