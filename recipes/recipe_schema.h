// The keys a recipe (TOML) may hold. recipes/README.md documents them; its
// table is generated from this schema (`dsee config --schema`) and a test
// keeps the two equal.
#pragma once

#include "base/config.h"

namespace dsee {

const ConfigSchema& recipe_schema();

}  // namespace dsee
