// Evaluation around the training stages: the pretrained model with the
// tuning attached (its dev metrics are the table's start column), and the
// eval stage, the final model's dev metrics and dev outputs
// (predictions-dev.safetensors; for e2e, webnlg and dart the decoded dev
// contexts, and the test ones with eval.splits = ["dev", "test"], with their
// references in hypotheses/). The eval stage runs again
// whenever it is listed: it only reads, and so reflects the files as they are.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "recipes/stages.h"

namespace dsee {

void stage_pretrained(Run& run) {
  const auto start = StageClock::now();
  run.tuning = tuning_attach(*run.model, recipe_tuning_options(run.recipe), run.omega);
  nlohmann::json pretrained = counts_of(run);
  pretrained["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data, run.ranks.comm);
  const auto metric = recipe_metric_for_best(run.recipe);
  std::vector<std::string> names;
  for (const auto& [name, value] : pretrained["dev"].items()) names.push_back(name);
  DSEE_CHECK(pretrained["dev"].contains(metric),
             "train.metric_for_best = '{}' is not among the evaluation's metrics ({}); use one of those, or leave it "
             "empty for the task's main metric",
             metric, fmt::join(names, ", "));
  pretrained["seconds"] = seconds_since(start);  // attaching the tuning and the untuned evaluation
  run.stages["pretrained"] = std::move(pretrained);
}

nlohmann::json stage_eval(Run& run) {
  if (!run.plan.runs(Stage::eval)) return nullptr;
  const auto start = StageClock::now();
  nlohmann::json record = counts_of(run);
  if (run.data.causal_lm) {  // Note [Data-to-text in the pipeline] in task_data.cpp
    // The dev split's scores under "dev" (as every evaluation's), the test
    // split's, when eval.splits lists it, under "test".
    std::vector<const NlgSplit*> splits = {&run.data.nlg->dev.front()};
    if (run.data.nlg->test) splits.push_back(&*run.data.nlg->test);
    for (const NlgSplit* split : splits) {
      const auto hypotheses = task_nlg_hypotheses(*run.model, run.tuning.get(), run.data, *split, run.ranks.comm);
      record[split->name] = task_nlg_scores(run.data, *split, hypotheses);
      root_writes(run.ranks, fmt::format("writing the {} hypotheses", split->name),
                  [&] { task_write_hypotheses(*split, hypotheses, run.dir.hypotheses()); });
    }
    record["seconds"] = seconds_since(start);
    stage_record(run, Stage::eval, record);
    return record;
  }
  const auto logits = task_dev_logits(*run.model, run.tuning.get(), run.data, run.ranks.comm);
  record["dev"] = task_metrics(run.data, logits);
  root_writes(run.ranks, "writing the dev predictions",
              [&] { task_write_predictions(run.data, logits, run.dir.predictions()); });
  record["seconds"] = seconds_since(start);
  stage_record(run, Stage::eval, record);
  return record;
}

}  // namespace dsee
