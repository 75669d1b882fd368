// dsee prune: apply a pruning plan to a model folder and save the result as a
// plain Hugging Face folder. Masks are baked into the weights (the pruned
// entries become zeros); heads are removed physically and recorded in
// config.json's pruned_heads, so transformers loads the folder as it is.
//
// The plan is either a masks.h5 written by a run (--plan; its masks come from
// |ΔW| of the trained update, docs/method.md 'Unstructured pruning' and 'Head
// pruning') or computed here from the pretrained weights alone (--heads K: the
// K heads of every layer with the smallest Σ|W| over their query and value
// rows; --p-rest P: the fraction P of the P_rest pool by |W|). Without a run
// there is no ΔW, so P_adapt is not offered here. --write-plan saves the plan
// that was applied.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/error.h"
#include "core/model/pretrained_model.h"
#include "core/sparsity/prune_plan.h"
#include "core/sparsity/pruning.h"
#include "core/tuning/tuning.h"
#include "launch/commands.h"

namespace dsee {
namespace {

void plan_print(const PrunePlan& plan) {
  for (const auto& [layer, heads] : plan.heads)
    fmt::print("layer {:>3}: heads removed {}\n", layer, fmt::join(heads, " "));
  for (const auto& m : plan.masks) {
    const auto numel = m.mask.numel();
    const auto zeros = numel - m.mask.count_nonzero().item<std::int64_t>();
    fmt::print("{:<45} {:>12} of {:>12} entries removed ({:.2f}%)\n", m.module, zeros, numel,
               100.0 * double(zeros) / double(numel));
  }
}

}  // namespace

Command prune_command(CLI::App& app) {
  struct Options {
    std::string model, out, plan, write_plan;
    std::int64_t heads = 0;
    double p_rest = 0.0;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("prune", "Apply a pruning plan (masks.h5, or heads / P_rest by magnitude) to a model");
  sub->add_option("--model", options->model, "Model folder (config.json + model.safetensors)")->required();
  sub->add_option("--out", options->out, "Folder to write the pruned model to")->required();
  auto* plan_flag = sub->add_option("--plan", options->plan, "A run's masks.h5");
  auto* heads_flag = sub->add_option("--heads", options->heads, "Remove this many heads of every layer (by Σ|W|)")
                         ->check(CLI::NonNegativeNumber);
  auto* rest_flag = sub->add_option("--p-rest", options->p_rest, "Remove this fraction of the P_rest pool (by |W|)")
                        ->check(CLI::Range(0.0, 1.0));
  plan_flag->excludes(heads_flag)->excludes(rest_flag);
  sub->add_option("--write-plan", options->write_plan, "Also write the plan that was applied (masks.h5)");
  return {sub, [options, sub] {
            const bool computed = sub->count("--heads") > 0 || sub->count("--p-rest") > 0;
            DSEE_CHECK(!options->plan.empty() || computed,
                       "dsee prune: give a plan: --plan masks.h5, or --heads K and/or --p-rest P");
            auto model = model_load(options->model);
            PrunePlan applied;
            if (!options->plan.empty()) {
              applied = prune_plan_read(options->plan);
              prune_plan_apply(*model, applied);
            } else {
              // Heads first: P_rest is then scored on the shrunk projections.
              applied = structured_plan(*model, nullptr, options->heads);
              prune_plan_apply(*model, applied);
              auto masks = unstructured_plan(*model, nullptr, {.p_adapt = 0.0, .p_rest = options->p_rest});
              prune_plan_apply(*model, masks);
              applied.masks = std::move(masks.masks);
            }
            plan_print(applied);
            if (!options->write_plan.empty()) prune_plan_write(options->write_plan, applied);
            model_merge(*model);  // bakes the masks into the weights
            model_save(*model, options->out);
            fmt::print("saved {} ({} masked projections, {} layers with heads removed)\n", options->out,
                       applied.masks.size(), applied.heads.size());
            return 0;
          }};
}

}  // namespace dsee
