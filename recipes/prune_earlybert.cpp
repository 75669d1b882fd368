// EarlyBERT's search in the prune stage; see prune_earlybert.h.
#include "recipes/prune_earlybert.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "core/io/safetensors.h"
#include "core/sparsity/earlybert.h"
#include "core/train/trainer.h"

namespace dsee {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The coefficients scale the input of these projections through the frozen
// weight's mask; an update added beside the weight (B·A, S) would escape them.
void check_no_scaled_update(Run& run) {
  for (const auto* update : run.tuning->updates()) {
    const auto& module = update->matrix.module;
    DSEE_CHECK(!ends_with(module, "attention.output.dense") && !ends_with(module, "output.dense") &&
                   !ends_with(module, "attn.c_proj") && !ends_with(module, "mlp.c_proj"),
               "prune.kind = earlybert: tuning.target_modules adapts '{}', whose input the EarlyBERT coefficients "
               "scale; its low-rank update would not be scaled. Adapt other projections (the default: query, value)",
               module);
  }
}

}  // namespace

void earlybert_recipe_check(const Recipe& recipe) {
  DSEE_CHECK(!recipe_is_nlg(recipe),
             "prune.kind = earlybert searches on the classification loss; task.name = {} is a data-to-text task. "
             "Use prune.kind = heads",
             recipe.task.name);
  DSEE_CHECK(recipe.prune.search_steps >= 1, "prune.search_steps = {}: the EarlyBERT search needs at least 1 step",
             recipe.prune.search_steps);
}

EarlyBertSearch earlybert_search(Run& run) {
  const auto& recipe = run.recipe;
  const auto& prune = recipe.prune;
  earlybert_recipe_check(recipe);
  check_no_scaled_update(run);
  const auto start = StageClock::now();
  auto* model = run.model.get();
  auto* tuning = run.tuning.get();

  // The weights the search starts from, to rewind to.
  std::vector<at::Tensor> start_weights;
  for (auto& [name, tensor] : tuning->trainable_parameters()) start_weights.push_back(tensor.detach().clone());

  EarlyBertCoefficients coefficients =
      earlybert_coefficients(*model, prune.heads_per_layer > 0, prune.neurons_per_layer > 0);
  NamedTensors parameters = tuning->trainable_parameters();
  for (auto& named : coefficients.named()) parameters.push_back(named);

  TrainerOptions options = recipe_trainer_options(recipe, Stage::train);
  options.max_steps = prune.search_steps;
  options.eval_every = 0;
  options.metric_for_best.clear();
  options.early_stopping_patience = 0;
  options.metrics_path = run.dir.metrics();
  options.metrics_stage = stage_name(Stage::prune);
  const auto micro_batch = recipe.train.batch_size / options.grad_accumulation;
  DSEE_CHECK(micro_batch >= 1 && micro_batch * options.grad_accumulation == recipe.train.batch_size,
             "train.batch_size ({}) must be a multiple of train.grad_accumulation ({})", recipe.train.batch_size,
             options.grad_accumulation);
  // Its own batch order (seed run.seed + 2: train uses + 0, retune + 1) and dropout stream.
  const auto seed = static_cast<std::uint64_t>(recipe.run.seed) + 2;
  TaskBatches batches(run.data.train, micro_batch, seed);
  at::manual_seed(seed);

  double last_task_loss = 0.0;
  {
    EarlyBertScaling scaling(*model, coefficients);
    const double l1 = prune.l1;
    const auto loss = [&](const TrainBatch& batch) {
      tuning->set_training(true);
      scaling.apply();
      const auto task = task_loss(*model, batch);
      last_task_loss = task.item<double>();
      return task + l1 * coefficients.l1_norm().to(task.device());
    };
    spdlog::info("{}: EarlyBERT search ({} steps, l1 {}, lr {})", run.dir.name(), prune.search_steps, l1, options.lr);
    Trainer trainer(parameters, options);
    trainer.run(batches, loss);
    tuning->set_training(false);
  }

  // Rewind to the weights the search started from; no gradient left behind.
  {
    at::NoGradGuard no_grad;
    std::size_t i = 0;
    for (auto& [name, tensor] : tuning->trainable_parameters()) tensor.copy_(start_weights.at(i++));
  }
  for (auto& [name, tensor] : parameters) tensor.mutable_grad().reset();

  NamedTensors saved;
  for (const auto& [name, tensor] : coefficients.named()) saved.push_back({name, tensor.detach().cpu()});
  safetensors_save(run.dir.path() / "earlybert.safetensors", saved, {{"format", "pt"}});

  EarlyBertSearch out;
  out.plan = earlybert_plan(*model, coefficients, prune.heads_per_layer, prune.neurons_per_layer);
  out.record = {{"steps", prune.search_steps},
                {"l1", prune.l1},
                {"coefficients_l1_norm", coefficients.l1_norm().item<double>()},
                {"last_task_loss", last_task_loss},
                {"seconds", seconds_since(start)}};
  return out;
}

}  // namespace dsee
