// dsee report --table: see report_table.h; the format of a spec and of the
// outputs is docs/report.md.
#include "recipes/report_table.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "base/config.h"
#include "base/error.h"
#include "base/files.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"
#include "recipes/report.h"
#include "recipes/run_dir.h"
#include "recipes/seed_stats.h"
#include "recipes/task_data.h"

namespace dsee {

namespace fs = std::filesystem;

// Note [Row keys]
// ~~~~~~~~~~~~~~~
//
// A paper sweep sets more keys than make its rows: each task has its own data
// folder and schedule, and an arm its own learning rate (Table 3: full
// fine-tuning at 2e-5, the adapters at 2e-4 or 5e-4 by task). Taking every
// key that differs would split one method into a row per learning rate. So a
// key makes rows only when it tells apart runs that agree on the column and
// on the row keys chosen before it: the spec's rows first (those that differ
// at all), then the method, then the others by name. A learning rate that
// follows the method and the task then makes no row, while a swept learning
// rate, different between runs of one method and task, does.

namespace {

const std::vector<std::string> known_extras = {"trainable_parameters", "nonzero_parameters", "flops_ratio"};

std::vector<std::string> string_list(const toml::node& node, const std::string& source, const std::string& key) {
  const auto* array = node.as_array();
  DSEE_CHECK(array != nullptr, "{}:{}: {} must be a list of strings, e.g. {} = [\"a\", \"b\"]", source,
             node.source().begin.line, key, key);
  std::vector<std::string> out;
  for (const auto& element : *array) {
    const auto* text = element.as_string();
    DSEE_CHECK(text != nullptr, "{}:{}: {} must be a list of strings", source, element.source().begin.line, key);
    out.push_back(text->get());
  }
  return out;
}

std::string string_of(const toml::node& node, const std::string& source, const std::string& key) {
  const auto* text = node.as_string();
  DSEE_CHECK(text != nullptr, "{}:{}: {} must be a string", source, node.source().begin.line, key);
  return text->get();
}

// A value as config.toml writes it → as a label shows it: "lora" for
// "\"lora\"", "query+value" for ["query", "value"].
std::string value_shown(const std::string& value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') return value.substr(1, value.size() - 2);
  if (value.size() >= 2 && value.front() == '[' && value.back() == ']') {
    std::string out;
    for (const char c : value.substr(1, value.size() - 2))
      if (c != '"' && c != ' ') out += c == ',' ? '+' : c;
    return out.empty() ? "none" : out;
  }
  return value;
}

// The name a key has in a row label: "r" for tuning.rank, "c" for omega.c, else its last part.
std::string key_shown(const std::string& key) {
  static const std::map<std::string, std::string> short_names = {{"tuning.rank", "r"},
                                                                 {"omega.c", "c"},
                                                                 {"omega.method", "omega"},
                                                                 {"prune.kind", "prune"},
                                                                 {"prune.heads_per_layer", "heads"},
                                                                 {"tuning.target_modules", "modules"},
                                                                 {"tuning.alpha", "alpha"},
                                                                 {"prune.criterion", "criterion"}};
  const auto it = short_names.find(key);
  if (it != short_names.end()) return it->second;
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string value_of(const ReportRun& run, const std::string& key) {
  const auto it = run.config.find(key);
  return it == run.config.end() ? std::string() : it->second;
}

// Whether a process holds the flock on `lock` (read from /proc/locks, which
// lists every flock on this machine by device and inode): probing with
// flock itself could make a run that starts at that moment fail to lock.
bool lock_held(const fs::path& lock) {
  struct stat info {};
  if (::stat(lock.c_str(), &info) != 0) return false;
  const std::string id = fmt::format("{:02x}:{:02x}:{}", major(info.st_dev), minor(info.st_dev), info.st_ino);
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream fields(line);
    std::string field;
    bool flock = false;
    while (fields >> field) {
      if (field == "FLOCK") flock = true;
      if (flock && field == id) return true;
    }
  }
  return false;
}

// The run in `dir` as it stands; nullopt for a run.compare folder (its arms are runs of their own).
std::optional<ReportRun> run_read(const fs::path& dir, const fs::path& root) {
  ReportRun run;
  run.dir = dir;
  run.label = fs::relative(dir, root).string();
  if (run.label == ".") run.label = dir.filename().string();
  const RunDir files(dir);
  if (fs::exists(files.config())) {
    run.config = recipe_lines(file_read_text(files.config()));
    if (value_of(run, "run.compare") != "" && value_of(run, "run.compare") != "[]") return std::nullopt;
  }
  if (fs::exists(files.summary())) {
    run.summary = file_read_json(files.summary(), "delete it to re-run that run");
    if (run.summary.is_object() && run.summary.contains("arms")) return std::nullopt;
    run.status = RunStatus::finished;
  } else if (fs::exists(files.config())) {
    run.status = lock_held(files.lock_file()) ? RunStatus::running : RunStatus::failed;
  }
  return run;
}

// "k1=v1 k2=v 2 k3=v3" → the overrides, a token that starts no "key=" joined to the one before.
std::vector<std::string> overrides_split(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    const auto eq = word.find('=');
    if (out.empty() || (eq != std::string::npos && recipe_schema().find(word.substr(0, eq)) != nullptr))
      out.push_back(word);
    else
      out.back() += " " + word;
  }
  return out;
}

// The runs a sweep.tsv lists, those not started resolved from a started
// run's config.toml with their overrides (the sweep sets every swept key).
std::vector<ReportRun> sweep_runs(const fs::path& tsv, const fs::path& root) {
  std::istringstream lines(file_read_text(tsv));
  std::string line;
  std::getline(lines, line);
  DSEE_CHECK(line.rfind("index\tname\t", 0) == 0, "{}: not a sweep.tsv (its first line is '{}'); dsee sweep writes it",
             tsv.string(), line);
  std::vector<ReportRun> runs;
  std::vector<std::vector<std::string>> overrides;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (int f = 0; f < 3; ++f) {
      const auto tab = line.find('\t', start);
      DSEE_CHECK(tab != std::string::npos, "{}: line '{}' has fewer than 4 tab-separated fields", tsv.string(), line);
      fields.push_back(line.substr(start, tab - start));
      start = tab + 1;
    }
    auto run = run_read(tsv.parent_path() / fields[1], root);
    if (!run) continue;
    runs.push_back(std::move(*run));
    overrides.push_back(overrides_split(line.substr(start)));
  }
  const auto started = std::find_if(runs.begin(), runs.end(), [](const ReportRun& r) { return !r.config.empty(); });
  std::string template_text;
  if (started != runs.end()) template_text = file_read_text(RunDir(started->dir).config());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (!runs[i].config.empty()) continue;
    const std::string source = fmt::format("{} run {}", tsv.string(), runs[i].label);
    try {
      const Config config = template_text.empty() ? Config::defaults(recipe_schema(), overrides[i])
                                                  : Config::parse(recipe_schema(), template_text, source, overrides[i]);
      runs[i].config = recipe_lines(config.to_toml());
      // Only the keys config.toml records (not run.lock, run.stages).
      const auto recorded = recipe_lines(template_text.empty() ? config.to_toml() : template_text);
      std::erase_if(runs[i].config, [&](const auto& entry) { return !recorded.count(entry.first); });
    } catch (const Error& e) {
      throw Error(fmt::format("{}: cannot resolve the recipe of run {} from its overrides: {}", tsv.string(),
                              runs[i].label, e.what()));
    }
  }
  return runs;
}

double number_of(const nlohmann::json& value) { return value.is_number() ? value.get<double>() : std::nan(""); }

// An extra of a finished run; NaN when its summary lacks it.
double extra_of(const ReportRun& run, const std::string& extra) {
  const auto& s = run.summary;
  if (extra != "flops_ratio") return s.contains(extra) ? number_of(s[extra]) : std::nan("");
  // Non-zero FLOPs of the final model over the dense FLOPs of the model before any pruning.
  if (!s.contains("flops_nonzero")) return std::nan("");
  const auto pretrained =
      s.contains("stages") && s["stages"].contains("pretrained") && s["stages"]["pretrained"].contains("flops_dense")
          ? number_of(s["stages"]["pretrained"]["flops_dense"])
      : s.contains("flops_dense") ? number_of(s["flops_dense"])
                                  : std::nan("");
  return number_of(s["flops_nonzero"]) / pretrained;
}

std::string main_metric_of(const ReportRun& run) {
  try {
    return task_main_metric(value_shown(value_of(run, "task.name")));
  } catch (const Error&) {
    return "main";
  }
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (const char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string extra_shown(const std::string& extra) {
  if (extra == "trainable_parameters") return "trainable";
  if (extra == "nonzero_parameters") return "non-zero";
  return "FLOPs ratio";
}

}  // namespace

const char* run_status_name(RunStatus status) {
  switch (status) {
    case RunStatus::finished:
      return "finished";
    case RunStatus::running:
      return "running";
    case RunStatus::failed:
      return "failed";
    case RunStatus::missing:
      return "missing";
  }
  return "?";
}

ReportSpec report_spec_parse(const std::string& text, const std::string& source, const std::string& name) {
  toml_check_text(text, source);
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}:{}: not valid TOML: {}", source, e.source().begin.line, e.source().begin.column,
                            e.description()));
  }
  ReportSpec spec;
  spec.name = name;
  spec.title = "Table " + name;
  for (const auto& [key_name, node] : table) {
    const std::string key(key_name.str());
    if (key == "title") {
      spec.title = string_of(node, source, key);
    } else if (key == "column") {
      spec.column = string_of(node, source, key);
    } else if (key == "split") {
      spec.split = string_of(node, source, key);
      DSEE_CHECK(spec.split == "dev" || spec.split == "test", "{}:{}: split must be \"dev\" or \"test\", not '{}'",
                 source, node.source().begin.line, spec.split);
    } else if (key == "plot_x") {
      spec.plot_x = string_of(node, source, key);
    } else if (key == "replicates") {
      spec.replicates = string_list(node, source, key);
    } else if (key == "metrics") {
      spec.metrics = string_list(node, source, key);
      DSEE_CHECK(!spec.metrics.empty(), "{}: metrics names no metric; give e.g. metrics = [\"main\"]", source);
    } else if (key == "extras") {
      spec.extras = string_list(node, source, key);
      for (const auto& extra : spec.extras)
        DSEE_CHECK(std::find(known_extras.begin(), known_extras.end(), extra) != known_extras.end(),
                   "{}: unknown extra '{}'; the extras are {}", source, extra, fmt::join(known_extras, ", "));
    } else if (key == "rows") {
      spec.rows = string_list(node, source, key);
    } else if (key == "ignore") {
      spec.ignore = string_list(node, source, key);
    } else if (key == "decimals") {
      const auto* number = node.as_integer();
      DSEE_CHECK(number != nullptr && number->get() >= 0 && number->get() <= 12,
                 "{}:{}: decimals must be an integer from 0 to 12", source, node.source().begin.line);
      spec.decimals = static_cast<int>(number->get());
    } else if (key == "labels" || key == "column_metrics") {
      const auto* sub = node.as_table();
      DSEE_CHECK(sub != nullptr, "{}:{}: [{}] must be a table", source, node.source().begin.line, key);
      for (const auto& [entry, value] : *sub) {
        if (key == "labels")
          spec.labels[std::string(entry.str())] = string_of(value, source, key + "." + std::string(entry.str()));
        else
          spec.column_metrics[std::string(entry.str())] =
              string_list(value, source, key + "." + std::string(entry.str()));
      }
    } else {
      throw Error(fmt::format(
          "{}:{}: unknown table spec key '{}' (known: title, column, replicates, metrics, column_metrics, extras, "
          "rows, ignore, labels, split, plot_x, decimals; docs/report.md)",
          source, node.source().begin.line, key));
    }
  }
  return spec;
}

ReportSpec report_spec_load(const std::string& name_or_file) {
  for (const auto& [name, text] : report_spec_builtins())
    if (name == name_or_file) return report_spec_parse(text, "built-in table " + name, name);
  if (fs::is_regular_file(name_or_file))
    return report_spec_parse(file_read_text(name_or_file), name_or_file, fs::path(name_or_file).stem().string());
  std::vector<std::string> names;
  for (const auto& [name, text] : report_spec_builtins()) names.push_back(name);
  throw Error(fmt::format("--table {}: neither a built-in table ({}) nor a spec file (docs/report.md)", name_or_file,
                          fmt::join(names, ", ")));
}

std::vector<ReportRun> report_runs_find(const std::vector<fs::path>& dirs) {
  std::vector<ReportRun> runs;
  for (const auto& root : dirs) {
    DSEE_CHECK(fs::is_directory(root), "'{}' is not a folder; give sweep or run folders", root.string());
    std::vector<fs::path> sweeps;
    if (fs::exists(root / "sweep.tsv")) {
      sweeps.push_back(root / "sweep.tsv");
    } else {
      for (const auto& entry : fs::directory_iterator(root))
        if (entry.is_directory() && fs::exists(entry.path() / "sweep.tsv"))
          sweeps.push_back(entry.path() / "sweep.tsv");
      std::sort(sweeps.begin(), sweeps.end());
    }
    const auto before = runs.size();
    for (const auto& tsv : sweeps)
      for (auto& run : sweep_runs(tsv, root)) runs.push_back(std::move(run));
    if (sweeps.empty()) {
      for (const auto& dir : report_run_folders(root, RunDir(root).config().filename().string()))
        if (auto run = run_read(dir, root)) runs.push_back(std::move(*run));
    }
    // Several folders: each run's label starts with its folder's name, so two sweeps' runs stay apart.
    const auto folder = root.filename().empty() ? root.parent_path().filename() : root.filename();
    if (dirs.size() > 1)
      for (auto i = before; i < runs.size(); ++i) runs[i].label = (folder / runs[i].label).string();
    DSEE_CHECK(runs.size() > before,
               "'{}' holds no sweep.tsv and no run directory (a folder with config.toml), in it or two levels below",
               root.string());
  }
  return runs;
}

ReportTable report_table_build(const ReportSpec& spec, std::vector<ReportRun> runs) {
  ReportTable table;
  table.spec = spec;
  // The row keys (Note [Row keys]): the spec's rows that differ between
  // runs, then each other key that still tells apart runs of one column
  // with equal row keys so far, the method first, the rest by name.
  std::set<std::string> excluded(spec.replicates.begin(), spec.replicates.end());
  excluded.insert(spec.ignore.begin(), spec.ignore.end());
  excluded.insert({spec.column, "run.name", "run.out_dir"});
  // Keys every run records (a key newer than some runs' config.toml makes no rows).
  std::set<std::string> differing;
  for (const auto& [key, value] : runs.front().config) {
    bool everywhere = !excluded.count(key), differs = false;
    for (const auto& run : runs) {
      everywhere = everywhere && run.config.count(key);
      differs = differs || (everywhere && run.config.at(key) != value);
    }
    if (everywhere && differs) differing.insert(key);
  }
  const auto splits = [&](const std::string& key) {
    std::map<std::string, std::string> seen;  // column and the row keys' values → the key's first value
    for (const auto& run : runs) {
      std::string group = value_of(run, spec.column);
      for (const auto& k : table.row_keys) group += "\x1f" + value_of(run, k);
      const auto [it, inserted] = seen.emplace(group, value_of(run, key));
      if (!inserted && it->second != value_of(run, key)) return true;
    }
    return false;
  };
  for (const auto& key : spec.rows)
    if (differing.count(key) && std::find(table.row_keys.begin(), table.row_keys.end(), key) == table.row_keys.end())
      table.row_keys.push_back(key);
  std::vector<std::string> candidates = {"tuning.method"};
  for (const auto& key : differing)
    if (key != "tuning.method") candidates.push_back(key);
  for (const auto& key : candidates)
    if (differing.count(key) && std::find(table.row_keys.begin(), table.row_keys.end(), key) == table.row_keys.end() &&
        splits(key))
      table.row_keys.insert(key == "tuning.method" ? table.row_keys.begin() : table.row_keys.end(), key);

  // Rows and columns in the order their first runs come.
  std::map<std::string, std::size_t> row_index;
  for (auto& run : runs) {
    std::vector<std::string> parts;
    ReportRow row;
    for (const auto& key : table.row_keys) {
      const auto shown = value_shown(value_of(run, key));
      row.keys[key] = shown;
      parts.push_back(key == "tuning.method" ? shown : key_shown(key) + "=" + shown);
    }
    if (parts.empty()) parts.push_back(value_shown(value_of(run, "tuning.method")));
    row.label = fmt::format("{}", fmt::join(parts, " "));
    if (const auto it = spec.labels.find(row.label); it != spec.labels.end()) row.label = it->second;
    if (!row_index.count(row.label)) {
      row_index[row.label] = table.rows.size();
      table.rows.push_back(row);
    }
    const auto column = value_shown(value_of(run, spec.column));
    if (std::find(table.columns.begin(), table.columns.end(), column) == table.columns.end())
      table.columns.push_back(column);
    table.rows[row_index[row.label]].runs[column][run.status].push_back(run.label);
    run.row = row.label;
    run.column = column;
  }
  // Rows grouped by their keys in order, each key's values in the order they first come:
  // Figure 2's Ω methods each with their c, not the sweep's c-major order.
  std::map<std::string, std::vector<std::string>> value_order;
  for (const auto& row : table.rows)
    for (const auto& [key, value] : row.keys) {
      auto& order = value_order[key];
      if (std::find(order.begin(), order.end(), value) == order.end()) order.push_back(value);
    }
  const auto rank = [&](const ReportRow& row) {
    std::vector<std::size_t> out;
    for (const auto& key : table.row_keys) {
      const auto& order = value_order[key];
      out.push_back(std::find(order.begin(), order.end(), row.keys.at(key)) - order.begin());
    }
    return out;
  };
  std::stable_sort(table.rows.begin(), table.rows.end(),
                   [&](const ReportRow& a, const ReportRow& b) { return rank(a) < rank(b); });

  // Each column's metrics: the spec's ("main": the task's main metric), those the finished runs have.
  for (const auto& column : table.columns) {
    const auto listed = spec.column_metrics.count(column) ? spec.column_metrics.at(column) : spec.metrics;
    std::vector<std::string> names;
    bool any_finished = false;
    for (const auto& wanted : listed) {
      std::string name = wanted;
      bool present = false;
      for (const auto& run : runs) {
        if (run.column != column) continue;
        if (name == "main") name = main_metric_of(run);
        if (run.status != RunStatus::finished) continue;
        any_finished = true;
        present = present || (run.summary.contains(spec.split) && run.summary[spec.split].contains(name));
      }
      if (std::find(names.begin(), names.end(), name) == names.end() && (present || !any_finished))
        names.push_back(name);
    }
    table.metrics[column] = names;
  }

  // The cells: every metric of the column and every extra, over the finished runs.
  for (auto& row : table.rows)
    for (const auto& column : table.columns) {
      std::vector<std::string> quantities = table.metrics[column];
      quantities.insert(quantities.end(), known_extras.begin(), known_extras.end());
      for (const auto& quantity : quantities) {
        ReportCell cell{column, quantity, {}, {}, {}};
        for (const auto& run : runs) {
          if (run.status != RunStatus::finished || run.row != row.label || run.column != column) continue;
          const bool extra = std::find(known_extras.begin(), known_extras.end(), quantity) != known_extras.end();
          const auto& scores = run.summary.contains(spec.split) ? run.summary[spec.split] : nlohmann::json::object();
          const double value = extra                       ? extra_of(run, quantity)
                               : scores.contains(quantity) ? number_of(scores[quantity])
                                                           : std::nan("");
          if (!std::isfinite(value)) continue;
          std::vector<std::string> seed;
          for (const auto& key : spec.replicates) seed.push_back(value_shown(value_of(run, key)));
          cell.values.push_back(value);
          cell.seeds.push_back(fmt::format("{}", fmt::join(seed, "/")));
          cell.runs.push_back(run.label);
        }
        row.cells.push_back(std::move(cell));
      }
    }
  for (const auto& run : runs)
    if (run.status != RunStatus::finished) table.unfinished.emplace_back(run.label, run.status);
  table.runs = std::move(runs);
  return table;
}

namespace {

struct GroupCounts {
  std::size_t expected = 0, missing = 0, running = 0, failed = 0;
};

GroupCounts counts_of(const ReportRow& row, const std::string& column) {
  GroupCounts counts;
  const auto it = row.runs.find(column);
  if (it == row.runs.end()) return counts;
  for (const auto& [status, labels] : it->second) {
    counts.expected += labels.size();
    if (status == RunStatus::missing) counts.missing = labels.size();
    if (status == RunStatus::running) counts.running = labels.size();
    if (status == RunStatus::failed) counts.failed = labels.size();
  }
  return counts;
}

const ReportCell* cell_of(const ReportRow& row, const std::string& column, const std::string& quantity) {
  for (const auto& cell : row.cells)
    if (cell.column == column && cell.quantity == quantity) return &cell;
  return nullptr;
}

// "0.821 ± 0.015 (5)"; short of the expected runs: "0.821 (1 of 2; 1 missing)".
std::string cell_text(const ReportCell& cell, const GroupCounts& counts, int decimals) {
  const SeedStats stats = seed_stats(cell.values);
  if (counts.expected == 0) return "";
  if (stats.n == counts.expected) return seed_stats_cell(stats, decimals);
  std::string text = stats.n == 0   ? "-"
                     : stats.n == 1 ? fmt::format("{:.{}f}", stats.mean, decimals)
                                    : fmt::format("{:.{}f} ± {:.{}f}", stats.mean, decimals, stats.std, decimals);
  std::vector<std::string> why;
  if (counts.missing) why.push_back(fmt::format("{} missing", counts.missing));
  if (counts.running) why.push_back(fmt::format("{} running", counts.running));
  if (counts.failed) why.push_back(fmt::format("{} failed", counts.failed));
  const auto without = counts.expected - counts.missing - counts.running - counts.failed - stats.n;
  if (without) why.push_back(fmt::format("{} without {}", without, cell.quantity));
  return text + fmt::format(" ({} of {}; {})", stats.n, counts.expected, fmt::join(why, ", "));
}

// An extra over the whole row (every column): one value when the runs agree, else "min–max".
std::string extra_text(const ReportRow& row, const std::string& extra) {
  std::vector<double> values;
  for (const auto& cell : row.cells)
    if (cell.quantity == extra) values.insert(values.end(), cell.values.begin(), cell.values.end());
  if (values.empty()) return "-";
  const auto [low, high] = std::minmax_element(values.begin(), values.end());
  const auto shown = [&](double v) {
    return extra == "flops_ratio" ? fmt::format("{:.3f}", v) : fmt::format("{:.0f}", v);
  };
  return shown(*low) == shown(*high) ? shown(*low) : shown(*low) + "–" + shown(*high);
}

}  // namespace

std::string report_table_markdown(const ReportTable& table) {
  const auto& spec = table.spec;
  std::vector<std::string> header = {"setting"};
  std::vector<std::pair<std::string, std::string>> columns;  // (column, metric)
  for (const auto& column : table.columns)
    for (const auto& metric : table.metrics.at(column)) {
      columns.emplace_back(column, metric);
      header.push_back(table.metrics.at(column).size() == 1 ? fmt::format("{} ({})", column, metric)
                                                            : fmt::format("{} {}", column, metric));
    }
  for (const auto& extra : spec.extras) header.push_back(extra_shown(extra));
  std::string out = fmt::format("## {}\n\n", spec.title);
  std::size_t finished = table.runs.size() - table.unfinished.size();
  out += fmt::format("{} runs, {} finished. Cells: mean ± std (n) of the {} scores over {}.\n\n", table.runs.size(),
                     finished, spec.split, fmt::join(spec.replicates, ", "));
  out += "| " + fmt::format("{}", fmt::join(header, " | ")) + " |\n";
  out += "|---|";
  for (std::size_t i = 1; i < header.size(); ++i) out += "---:|";
  out += "\n";
  for (const auto& row : table.rows) {
    std::vector<std::string> cells = {row.label};
    for (const auto& [column, metric] : columns) {
      const auto* cell = cell_of(row, column, metric);
      cells.push_back(cell ? cell_text(*cell, counts_of(row, column), spec.decimals) : "");
    }
    for (const auto& extra : spec.extras) cells.push_back(extra_text(row, extra));
    out += "| " + fmt::format("{}", fmt::join(cells, " | ")) + " |\n";
  }
  if (!table.unfinished.empty()) {
    out += "\nUnfinished runs (counted in their cells, not in the means):\n";
    // The first 20 of each status by name; the rest counted (the CSV and JSON list every run).
    std::map<RunStatus, std::size_t> listed;
    for (const auto& [label, status] : table.unfinished) {
      if (++listed[status] > 20) continue;
      const char* why = status == RunStatus::missing   ? "listed in sweep.tsv, not started"
                        : status == RunStatus::running ? "its process holds the run's lock"
                                                       : "no summary.json and no process holds its lock: it failed "
                                                         "or was stopped; re-run the sweep to finish it";
      out += fmt::format("- {}: {} ({})\n", run_status_name(status), label, why);
    }
    for (const auto& [status, count] : listed)
      if (count > 20) out += fmt::format("- … and {} more {} runs\n", count - 20, run_status_name(status));
  }
  return out;
}

std::string report_table_csv(const ReportTable& table) {
  std::string out = "row,column,quantity,mean,std,n,expected,missing,running,failed,seeds,values\n";
  for (const auto& row : table.rows)
    for (const auto& cell : row.cells) {
      const bool extra = std::find(known_extras.begin(), known_extras.end(), cell.quantity) != known_extras.end();
      if (extra &&
          std::find(table.spec.extras.begin(), table.spec.extras.end(), cell.quantity) == table.spec.extras.end())
        continue;
      const auto counts = counts_of(row, cell.column);
      const SeedStats stats = seed_stats(cell.values);
      std::vector<std::string> values;
      for (const double v : cell.values) values.push_back(fmt::format("{}", v));
      out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_field(row.label), csv_field(cell.column),
                         csv_field(cell.quantity), stats.n ? fmt::format("{}", stats.mean) : "",
                         stats.n ? fmt::format("{}", stats.std) : "", stats.n, counts.expected, counts.missing,
                         counts.running, counts.failed, csv_field(fmt::format("{}", fmt::join(cell.seeds, ";"))),
                         fmt::format("{}", fmt::join(values, ";")));
    }
  return out;
}

nlohmann::json report_table_json(const ReportTable& table) {
  const auto& spec = table.spec;
  nlohmann::json out = {{"name", spec.name},
                        {"title", spec.title},
                        {"column", spec.column},
                        {"split", spec.split},
                        {"replicates", spec.replicates},
                        {"extras", spec.extras},
                        {"plot_x", spec.plot_x},
                        {"row_keys", table.row_keys},
                        {"columns", table.columns},
                        {"metrics", table.metrics},
                        {"rows", nlohmann::json::array()},
                        {"runs", nlohmann::json::array()}};
  for (const auto& row : table.rows) {
    nlohmann::json cells = nlohmann::json::array();
    for (const auto& cell : row.cells) {
      const auto counts = counts_of(row, cell.column);
      const SeedStats stats = seed_stats(cell.values);
      cells.push_back({{"column", cell.column},
                       {"quantity", cell.quantity},
                       {"mean", stats.n ? nlohmann::json(stats.mean) : nlohmann::json(nullptr)},
                       {"std", stats.n ? nlohmann::json(stats.std) : nlohmann::json(nullptr)},
                       {"n", stats.n},
                       {"expected", counts.expected},
                       {"missing", counts.missing},
                       {"running", counts.running},
                       {"failed", counts.failed},
                       {"values", cell.values},
                       {"seeds", cell.seeds},
                       {"runs", cell.runs}});
    }
    out["rows"].push_back({{"label", row.label}, {"keys", row.keys}, {"cells", cells}});
  }
  for (const auto& run : table.runs)
    out["runs"].push_back({{"run", run.label},
                           {"dir", run.dir.string()},
                           {"status", run_status_name(run.status)},
                           {"row", run.row},
                           {"column", run.column}});
  return out;
}

}  // namespace dsee
