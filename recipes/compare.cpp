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
#include "recipes/seed_stats.h"

namespace dsee {
namespace {

// The dev accuracy of `stage` over an arm's runs, mean ± std (n); "-" where no run has it.
std::string accuracy_cell(const std::vector<const nlohmann::json*>& summaries, const std::string& stage) {
  std::vector<double> values;
  for (const auto* s : summaries) {
    const auto& stages = (*s)["stages"];
    if (stages.contains(stage) && stages[stage]["dev"].contains("accuracy"))
      values.push_back(stages[stage]["dev"]["accuracy"].get<double>());
  }
  const auto stats = seed_stats(values);
  return stats.n == 1 ? fmt::format("{:.3f}", stats.mean) : seed_stats_cell(stats, 3);
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
    arm.arm = arm.name;
    if (recipe.run.compare_seeds == 1) {
      arms.push_back(std::move(arm));
      continue;
    }
    for (const auto& override_text : arm.overrides)
      DSEE_CHECK(!override_text.starts_with("run.seed="),
                 "{}: run.compare arm '{}' sets {} while run.compare_seeds = {} gives every arm the seeds {}, {}, ...; "
                 "drop one of them",
                 recipe.source, arm.name, override_text, recipe.run.compare_seeds, recipe.run.seed,
                 recipe.run.seed + 1);
    for (std::int64_t k = 0; k < recipe.run.compare_seeds; ++k) {
      CompareArm run = arm;
      const std::int64_t seed = recipe.run.seed + k;
      run.name = fmt::format("{}-seed{}", arm.name, seed);
      run.overrides.push_back(fmt::format("run.seed={}", seed));
      arms.push_back(std::move(run));
    }
  }
  return arms;
}

void compare_table_print(const std::vector<std::pair<CompareArm, nlohmann::json>>& runs) {
  const bool seeds = std::any_of(runs.begin(), runs.end(), [](const auto& r) { return r.first.arm != r.first.name; });
  std::vector<std::vector<std::string>> rows = {{"arm", "method", "trainable", "non-zero params", "FLOPs (dense)",
                                                 "FLOPs (non-zero)", "dev acc: start", "trained", "pruned",
                                                 "re-tuned"}};
  std::vector<std::string> order;
  for (const auto& [arm, summary] : runs)
    if (std::find(order.begin(), order.end(), arm.arm) == order.end()) order.push_back(arm.arm);
  for (const auto& name : order) {
    std::vector<const nlohmann::json*> summaries;
    for (const auto& [arm, summary] : runs)
      if (arm.arm == name) summaries.push_back(&summary);
    const auto& s = *summaries.front();
    rows.push_back(
        {name, s["method"].get<std::string>(), fmt::format("{}", s["trainable_parameters"].get<std::int64_t>()),
         fmt::format("{}", s["nonzero_parameters"].get<std::int64_t>()),
         fmt::format("{}", s["flops_dense"].get<std::int64_t>()),
         fmt::format("{}", s["flops_nonzero"].get<std::int64_t>()), accuracy_cell(summaries, "pretrained"),
         accuracy_cell(summaries, "train"), accuracy_cell(summaries, "prune"), accuracy_cell(summaries, "retune")});
  }
  if (seeds) std::printf("dev accuracy: mean ± sample std (number of seeds)\n");
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
