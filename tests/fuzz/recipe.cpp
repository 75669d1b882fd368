// Fuzz target: a recipe (TOML, checked against recipes/recipe_schema.h by
// base/config.h). An accepted recipe must print back (Config::to_toml, what
// a run records in config.toml and in its checkpoints) as TOML that parses
// to the same configuration and compares equal to itself.

#include "base/config.h"
#include "base/error.h"
#include "fuzz_target.h"
#include "recipes/recipe_schema.h"

DSEE_FUZZ_TARGET(recipe) {
  const std::string text(dsee_fuzz::as_text(data, size));
  std::string printed;
  try {
    printed = dsee::Config::parse(dsee::recipe_schema(), text, "recipe.toml").to_toml();
  } catch (const dsee::Error&) {
    return 0;
  }
  try {
    dsee_fuzz::require(dsee::Config::parse(dsee::recipe_schema(), printed, "config.toml").to_toml() == printed);
    dsee_fuzz::require(dsee::config_differences(printed, printed, "config.toml", "config.toml").empty());
  } catch (const dsee::Error&) {
    std::abort();  // what dsee wrote it cannot read
  }
  return 0;
}
