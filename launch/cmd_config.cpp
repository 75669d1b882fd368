// dsee config: check a recipe and print the resolved configuration (every
// key, defaults filled in, --set overrides applied), or the schema.
#include <iostream>

#include "launch/commands.h"
#include "recipes/recipe_schema.h"

namespace dsee {

Command config_command(CLI::App& app) {
  struct Options {
    std::string recipe;
    std::vector<std::string> overrides;
    bool schema = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("config", "Check a recipe and print the resolved configuration");
  sub->add_option("recipe", options->recipe, "Recipe file (TOML); omit to print the defaults");
  sub->add_option("--set", options->overrides, "Override a key: --set train.lr=3e-4 (repeatable)");
  sub->add_flag("--schema", options->schema, "Print every key with its type and default as a Markdown table");
  return {sub, [options] {
            if (options->schema) {
              std::cout << recipe_schema().markdown();
              return 0;
            }
            const Config config = options->recipe.empty()
                                      ? Config::defaults(recipe_schema(), options->overrides)
                                      : Config::load(recipe_schema(), options->recipe, options->overrides);
            std::cout << config.to_toml();
            return 0;
          }};
}

}  // namespace dsee
