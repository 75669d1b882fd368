// tuning.init_from: the source run checked and its tensors copied; see init_from.h.
#include "recipes/init_from.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "base/error.h"
#include "base/files.h"
#include "base/shape_text.h"
#include "core/io/safetensors.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

bool is_update_tensor(const std::string& name) {
  return name.ends_with(".lora_A") || name.ends_with(".lora_B") || name.ends_with(".sparse_values") ||
         name.find(".adapter.") != std::string::npos || name.starts_with("prefix.");
}

// The keys whose values the source's tensors depend on.
std::vector<std::string> keys_to_match(TuningMethod method) {
  if (method == TuningMethod::full || method == TuningMethod::bitfit) return {"tuning.method"};
  if (method == TuningMethod::top_k) return {"tuning.method", "tuning.top_layers"};
  if (method == TuningMethod::adapter)
    return {"tuning.method", "tuning.adapter_size", "tuning.adapter_activation", "tuning.adapter_train_layernorm"};
  if (method == TuningMethod::prefix)
    return {"tuning.method", "tuning.prefix_length", "tuning.prefix_projection", "tuning.prefix_hidden"};
  std::vector<std::string> keys = {"tuning.method", "tuning.rank", "tuning.target_modules"};
  if (method == TuningMethod::dsee)
    for (const char* key : {"omega.c", "omega.method", "omega.variant", "omega.seed", "omega.max_rank", "omega.tol"})
      keys.push_back(key);
  return keys;
}

std::string source_check(const Run& run) {
  const fs::path source = run.recipe.tuning.init_from;
  const auto here = run.dir.path().string();
  DSEE_CHECK(fs::is_directory(source), "tuning.init_from = {}: no such run directory (this run: {})", source.string(),
             here);
  const RunDir dir(source);
  DSEE_CHECK(fs::exists(dir.config()),
             "tuning.init_from = {}: not a run directory (it has no config.toml); for run.compare give one arm, "
             "<run>/<arm> (this run: {})",
             source.string(), here);
  DSEE_CHECK(fs::exists(dir.record(Stage::train)),
             "tuning.init_from = {}: that run has not finished its train stage (no stages/train.json); finish it "
             "first (this run: {})",
             source.string(), here);
  const auto theirs = recipe_lines(file_read_text(dir.config()));
  const auto ours = recipe_lines(run.recipe.identity);
  for (const auto& key : keys_to_match(run.recipe.tuning.method)) {
    const auto it = theirs.find(key);
    const std::string value = it == theirs.end() ? "(not set)" : it->second;
    DSEE_CHECK(value == ours.at(key),
               "tuning.init_from = {}: that run has {} = {}, this run ({}) has {} = {}; its tensors fit only a run "
               "tuned the same way: set {} = {} or start from another run",
               source.string(), key, value, here, key, ours.at(key), key, value);
  }
  const auto pruned = theirs.find("prune.kind");
  DSEE_CHECK(pruned == theirs.end() || pruned->second != "\"heads\"",
             "tuning.init_from = {}: that run removed attention heads (prune.kind = \"heads\"), so its tensors fit "
             "its shrunk model only (this run: {}); start from a run without head pruning",
             source.string(), here);
  return (fs::exists(dir.record(Stage::retune)) ? dir.trainables(Stage::retune) : dir.trainables(Stage::train))
      .string();
}

}  // namespace

InitSource init_source_check(const Run& run) {
  const auto trainables = root_does(run.ranks, "checking tuning.init_from", [&] { return source_check(run); });
  return {run.recipe.tuning.init_from, trainables};
}

InitCopy init_trainables_copy(const NamedTensors& trainables, const fs::path& file, const std::string& this_run,
                              const std::string& source_run) {
  const auto source = SafetensorsCheckpoint::open(file);
  at::NoGradGuard no_grad;
  InitCopy out;
  for (const auto& [name, tensor] : trainables) {
    const bool update = is_update_tensor(name);
    if (!source.contains(name)) {
      DSEE_CHECK(!update,
                 "tuning.init_from = {}: {} has no tensor '{}', which this run ({}) trains; the runs adapt "
                 "different matrices",
                 source_run, file.string(), name, this_run);
      out.skipped.push_back(fmt::format("{} (not in {})", name, file.filename().string()));
      continue;
    }
    const auto saved = source.tensor(name);
    if (saved.sizes() != tensor.sizes()) {
      DSEE_CHECK(!update, "tuning.init_from = {}: tensor '{}' is {} there, {} in this run ({})", source_run, name,
                 shape_text(saved.sizes()), shape_text(tensor.sizes()), this_run);
      out.skipped.push_back(
          fmt::format("{} ({} there, {} here)", name, shape_text(saved.sizes()), shape_text(tensor.sizes())));
      continue;
    }
    tensor.copy_(saved);
    ++out.copied;
  }
  return out;
}

void init_from_apply(Run& run) {
  const auto source = init_source_check(run);
  InitCopy copy;
  read_on_every_rank(run.ranks, source.trainables, "reading tuning.init_from's tensors", [&] {
    copy = init_trainables_copy(run.tuning->trainable_parameters(), source.trainables, run.dir.path().string(),
                                source.dir.string());
  });
  if (!run.ranks.root()) return;
  spdlog::info("{}: train starts from {} ({} tensors copied)", run.dir.name(), source.trainables.string(), copy.copied);
  if (!copy.skipped.empty())
    spdlog::info("{}: task-head tensors not copied from {}, they start fresh: {}", run.dir.name(), source.dir.string(),
                 fmt::join(copy.skipped, ", "));
}

}  // namespace dsee
