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
struct CompareArm {
  std::string name;
  std::vector<std::string> overrides;
};
CompareArm compare_arm_parse(const std::string& text);

// The arms of recipe.run.compare, each with "run.compare=[]" appended to its
// overrides. dsee::Error for bad syntax or an arm that sets a task.* key
// (Note [The arms' shared data] in compare.cpp; `data_dir` names the shared
// data folder in the message).
std::vector<CompareArm> compare_arms(const Recipe& recipe, const std::filesystem::path& data_dir);

// The comparison table on stdout, one line per arm: name and the arm's
// summary (pipeline_run's), as the demo prints it.
void compare_table_print(const std::vector<std::pair<std::string, nlohmann::json>>& arms);

}  // namespace dsee
