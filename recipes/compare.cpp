// run.compare's arms and table: see compare.h.
//
// Note [The arms' shared data]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The arms of a comparison learn one task from one data folder, <run>/data.
// For the demo that folder also fixes the teacher, whose planted sparse
// entries sit on GreBsmo's Ω with the base recipe's omega.* settings. An arm
// may change its own Ω (omega.c, say) but not the task: its data comes from
// the base recipe's options, and task.* keys in an arm are refused. Were the
// data an arm's own, an arm with another omega.c would plant its teacher on
// another Ω, learn another task than the table's other rows, and rewrite the
// folder they share.
#include "recipes/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "base/error.h"

namespace dsee {
namespace {

std::string accuracy_cell(const nlohmann::json& stages, const std::string& stage) {
  if (!stages.contains(stage) || !stages[stage]["dev"].contains("accuracy")) return "-";
  return fmt::format("{:.3f}", stages[stage]["dev"]["accuracy"].get<double>());
}

}  // namespace

CompareArm compare_arm_parse(const std::string& text) {
  const auto colon = text.find(':');
  DSEE_CHECK(colon != std::string::npos && colon > 0, "run.compare: '{}' must read \"name: key=value key=value ...\"",
             text);
  CompareArm arm;
  arm.name = text.substr(0, colon);
  std::istringstream rest(text.substr(colon + 1));
  for (std::string assignment; rest >> assignment;) {
    DSEE_CHECK(assignment.find('=') != std::string::npos, "run.compare: arm '{}': '{}' is not key=value", arm.name,
               assignment);
    arm.overrides.push_back(assignment);
  }
  return arm;
}

std::vector<CompareArm> compare_arms(const Recipe& recipe, const std::filesystem::path& data_dir) {
  std::vector<CompareArm> arms;
  for (const auto& text : recipe.run.compare) {
    CompareArm arm = compare_arm_parse(text);
    for (const auto& override_text : arm.overrides)
      DSEE_CHECK(!override_text.starts_with("task."),
                 "{}: run.compare arm '{}' sets {}: the arms of a comparison share the task and its data ({}); set "
                 "task.* keys in the recipe itself, or compare separate runs with dsee report",
                 recipe.source, arm.name, override_text, data_dir.string());
    arm.overrides.push_back("run.compare=[]");
    arms.push_back(std::move(arm));
  }
  return arms;
}

void compare_table_print(const std::vector<std::pair<std::string, nlohmann::json>>& arms) {
  std::vector<std::vector<std::string>> rows = {{"arm", "method", "trainable", "non-zero params", "FLOPs (dense)",
                                                 "FLOPs (non-zero)", "dev acc: start", "trained", "pruned",
                                                 "re-tuned"}};
  for (const auto& [name, s] : arms)
    rows.push_back({name, s["method"].get<std::string>(),
                    fmt::format("{}", s["trainable_parameters"].get<std::int64_t>()),
                    fmt::format("{}", s["nonzero_parameters"].get<std::int64_t>()),
                    fmt::format("{}", s["flops_dense"].get<std::int64_t>()),
                    fmt::format("{}", s["flops_nonzero"].get<std::int64_t>()), accuracy_cell(s["stages"], "pretrained"),
                    accuracy_cell(s["stages"], "train"), accuracy_cell(s["stages"], "prune"),
                    accuracy_cell(s["stages"], "retune")});
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += (i ? "  " : "") +
              (i == 0 ? fmt::format("{:<{}}", row[i], width[i]) : fmt::format("{:>{}}", row[i], width[i]));
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace dsee
