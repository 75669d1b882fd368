// dsee run: execute a recipe's stages in its run directory (recipes/pipeline.h).
#include "data/config.h"
#include "launch/commands.h"
#include "recipes/pipeline.h"
#include "recipes/recipe_schema.h"

namespace dsee {

Command run_command(CLI::App& app) {
  struct Options {
    std::string recipe;
    std::vector<std::string> overrides;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("run", "Run a recipe: Ω, train, prune, re-tune, evaluate, export");
  sub->add_option("recipe", options->recipe, "Recipe file (TOML), e.g. recipes/demo.toml")->required();
  sub->add_option("--set", options->overrides, "Override a key: --set train.lr=3e-4 (repeatable)");
  return {sub, [options] {
            const Config config = Config::load(recipe_schema(), options->recipe, options->overrides);
            pipeline_run(config);
            return 0;
          }};
}

}  // namespace dsee
