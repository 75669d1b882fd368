// run.compare: arms of one recipe run side by side in one run directory
// (<run>/<arm>) and tabulated, as the demo does. The pipeline runs them
// (pipeline.cpp); here: the arms' syntax, the rule that they share the task,
// and the table.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "recipes/recipe.h"

namespace dsee {

// An arm of run.compare: "name: key=value key=value" → name and overrides.
// With run.compare_seeds = n > 1 each arm runs n times: `name` is then
// "<arm>-seed<k>" (its folder) and `arm` the arm's own name (its table row).
struct CompareArm {
  std::string name;
  std::vector<std::string> overrides;
  std::string arm;  // the table row; equal to name with one seed
};
CompareArm compare_arm_parse(const std::string& text);

// The runs of recipe.run.compare, arm by arm and within an arm seed by seed
// (run.compare_seeds: "run.seed=<k>" appended), each with "run.compare=[]"
// appended to its overrides. dsee::Error for bad syntax, an arm that sets a
// task.* key (Note [The arms' shared data] in compare.cpp; `data_dir` names
// the shared data folder in the message), or one that sets run.seed while
// run.compare_seeds > 1.
std::vector<CompareArm> compare_arms(const Recipe& recipe, const std::filesystem::path& data_dir);

// The comparison table on stdout, one line per arm (CompareArm::arm) from
// its runs' summaries (pipeline_run's), in the arms' first-seen order, as the
// demo prints it: counts from the arm's first run, dev accuracies as
// mean ± std (n) over its seeds (seed_stats.h).
void compare_table_print(const std::vector<std::pair<CompareArm, nlohmann::json>>& runs);

}  // namespace dsee
