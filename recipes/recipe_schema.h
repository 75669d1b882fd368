// The keys a recipe (TOML) may hold. docs/recipes.md documents them; its
// table is generated from this schema (`dsee config --schema`) and a test
// (recipes_readme_matches_schema) keeps the two equal. recipe.h reads them.
#pragma once

#include "base/config.h"

namespace dsee {

const ConfigSchema& recipe_schema();

}  // namespace dsee
