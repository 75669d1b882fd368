// Sweep expansion: see sweep.h.
#include "recipes/sweep.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

#include "base/config.h"
#include "base/error.h"
#include "base/files.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"

namespace dsee {
namespace {

// Keys of a [grid]/[zip] table with their value lists, nested tables
// flattened to dotted names; std::map keeps them sorted.
std::map<std::string, std::vector<std::string>> value_lists(const toml::table& table, const std::string& section,
                                                            const std::string& source, const std::string& prefix = "") {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [key, node] : table) {
    const std::string name = prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    if (const auto* sub = node.as_table()) {
      if (sub->empty()) continue;
      auto nested = value_lists(*sub, section, source, name);
      out.insert(nested.begin(), nested.end());
      continue;
    }
    const auto* array = node.as_array();
    DSEE_CHECK(array && !array->empty(), "{}:{}: [{}] {} must be a non-empty list of values, e.g. {} = [1e-4, 3e-4]",
               source, node.source().begin.line, section, name, name);
    std::vector<std::string> values;
    for (const auto& element : *array) {
      if (const auto* text = element.as_string()) {
        values.push_back(text->get());
      } else {
        DSEE_CHECK(!element.is_table(), "{}:{}: [{}] {}: a table is not a value", source, element.source().begin.line,
                   section, name);
        // TOML text, as --set reads it; floats in their shortest exact form
        // (3e-4 → "0.0003", not toml++'s 17 digits).
        if (const auto* number = element.as_floating_point()) {
          values.push_back(fmt::format("{}", number->get()));
          continue;
        }
        std::ostringstream rendered;
        element.visit([&](const auto& value) { rendered << value; });
        values.push_back(rendered.str());
      }
    }
    out.emplace(name, std::move(values));
  }
  return out;
}

// "0.0003" stays, "/data/x y" → "_data_x_y": safe in a directory name.
std::string name_part(const std::string& text) {
  std::string out;
  for (const char c : text)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+') ? c : '_';
  return out.substr(0, 40);
}

std::string leaf(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

}  // namespace

Sweep sweep_load(const std::filesystem::path& file, const std::vector<std::string>& overrides, std::size_t max_runs) {
  const std::string source = file.string();
  toml::table table;
  const std::string text = file_read_text(file);
  toml_check_text(text, source);
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}:{}: not valid TOML: {}", source, e.source().begin.line, e.source().begin.column,
                            e.description()));
  }
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    DSEE_CHECK(k == "recipe" || k == "name" || k == "out_dir" || k == "command" || k == "grid" || k == "zip",
               "{}:{}: unknown sweep key '{}' (known: recipe, name, out_dir, command, [grid], [zip])", source,
               node.source().begin.line, k);
  }
  const auto recipe = table["recipe"].value<std::string>();
  DSEE_CHECK(recipe && !recipe->empty(), "{}: the sweep needs recipe = \"BASE.toml\" (relative to the sweep file)",
             source);
  Sweep sweep;
  sweep.recipe =
      std::filesystem::path(*recipe).is_absolute() ? std::filesystem::path(*recipe) : file.parent_path() / *recipe;
  sweep.name = table["name"].value_or(file.stem().string());
  DSEE_CHECK(!sweep.name.empty() && sweep.name.find('/') == std::string::npos,
             "{}: name '{}' must be a non-empty directory name", source, sweep.name);
  sweep.command = table["command"].value_or(std::string("run"));

  const Recipe base = recipe_load(sweep.recipe, overrides);
  sweep.out_dir = std::filesystem::path(table["out_dir"].value_or(base.run.out_dir)) / sweep.name;

  // [zip] is one zip group; [[zip]] (an array of tables) several, each its own axis.
  std::map<std::string, std::vector<std::string>> grid;
  std::vector<std::map<std::string, std::vector<std::string>>> zips;
  if (const auto* t = table["grid"].as_table()) grid = value_lists(*t, "grid", source);
  if (const auto* t = table["zip"].as_table()) {
    zips.push_back(value_lists(*t, "zip", source));
  } else if (const auto* groups = table["zip"].as_array()) {
    for (std::size_t g = 0; g < groups->size(); ++g) {
      const auto* group = groups->get(g)->as_table();
      DSEE_CHECK(group != nullptr, "{}: zip group {} must be a table ([[zip]] followed by key = [values] lines)",
                 source, g + 1);
      zips.push_back(value_lists(*group, fmt::format("zip {}", g + 1), source));
    }
  } else {
    DSEE_CHECK(!table.contains("zip"), "{}: zip must be a table [zip] or tables [[zip]]", source);
  }
  std::erase_if(zips, [](const auto& group) { return group.empty(); });
  DSEE_CHECK(!grid.empty() || !zips.empty(), "{}: nothing to sweep: give lists under [grid] and/or [zip]", source);
  std::map<std::string, std::string> section_of;  // key -> where it is swept
  const auto claim = [&](const std::string& key, const std::string& section) {
    DSEE_CHECK(recipe_schema().find(key) != nullptr, "{}: '{}' is not a recipe key (see `dsee config --schema`)",
               source, key);
    DSEE_CHECK(key != "run.name" && key != "run.out_dir", "{}: '{}' is set by the sweep itself (use name / out_dir)",
               source, key);
    const auto [it, fresh] = section_of.emplace(key, section);
    DSEE_CHECK(fresh, "{}: '{}' is swept twice: in [{}] and [{}]", source, key, it->second, section);
  };
  for (const auto& [key, values] : grid) claim(key, "grid");
  std::vector<std::size_t> zip_lengths;
  for (std::size_t g = 0; g < zips.size(); ++g) {
    const std::string section = zips.size() == 1 ? "zip" : fmt::format("zip {}", g + 1);
    std::size_t length = 0;
    for (const auto& [key, values] : zips[g]) {
      claim(key, section);
      DSEE_CHECK(length == 0 || values.size() == length,
                 "{}: [{}] lists must have equal lengths, but '{}' has {} values and the others {}", source, section,
                 key, values.size(), length);
      length = values.size();
    }
    zip_lengths.push_back(length);
  }
  for (const auto& assignment : overrides) {
    const std::string key = assignment.substr(0, assignment.find('='));
    DSEE_CHECK(!section_of.count(key), "{}: --set {}: '{}' is swept by the file ([{}]); drop the --set or the list",
               source, assignment, key, section_of[key]);
  }

  // Axes: each grid key, then each zip group; mixed-radix counting, last fastest.
  std::vector<std::size_t> radix;
  for (const auto& [key, values] : grid) radix.push_back(values.size());
  for (const auto length : zip_lengths) radix.push_back(length);
  std::size_t total = 1;
  for (const auto r : radix) {
    DSEE_CHECK(total <= max_runs / r, "{}: the sweep expands to more than {} runs", source, max_runs);
    total *= r;
  }

  for (std::size_t index = 0; index < total; ++index) {
    std::vector<std::size_t> digit(radix.size());
    for (std::size_t rest = index, a = radix.size(); a-- > 0;) {
      digit[a] = rest % radix[a];
      rest /= radix[a];
    }
    std::vector<std::pair<std::string, std::string>> assigned;
    SweepRun run;
    run.name = fmt::format("{:03d}", index);
    const auto name_add = [&](const std::string& key, const std::string& value) {
      run.name += fmt::format("-{}={}", name_part(leaf(key)), name_part(value));
    };
    std::size_t axis = 0;
    for (const auto& [key, values] : grid) {
      assigned.emplace_back(key, values[digit[axis++]]);
      name_add(key, assigned.back().second);
    }
    for (const auto& group : zips) {
      for (const auto& [key, values] : group) {
        assigned.emplace_back(key, values[digit[axis]]);
        // A path in a zip group rides along with the group's other keys (a
        // task's data folder with task.name): they name the run without it.
        if (group.size() == 1 || assigned.back().second.find('/') == std::string::npos)
          name_add(key, assigned.back().second);
      }
      ++axis;
    }
    // The index keeps names distinct; the cut keeps them a directory name.
    if (run.name.size() > 160) run.name.resize(160);
    run.run_dir = sweep.out_dir / run.name;
    // The sweep's overrides first: its run.out_dir (if any) only moves the
    // sweep's folder, which the two after them name.
    run.overrides = overrides;
    run.overrides.push_back("run.out_dir=" + sweep.out_dir.string());
    run.overrides.push_back("run.name=" + run.name);
    for (const auto& [key, value] : assigned) run.overrides.push_back(key + "=" + value);
    try {
      recipe_load(sweep.recipe, run.overrides);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: run {} ({}): {}", source, index, run.name, e.what()));
    }
    sweep.runs.push_back(std::move(run));
  }
  return sweep;
}

}  // namespace dsee
