// trainer_driver: runs dsee's training pieces (AdamW, schedules, clipping,
// losses, metrics) on tensors handed over from Python, for the parity test
// tests/parity/test_optimizer.py. Not a user command.
//
//   optimize  --input in.safetensors --output out.safetensors [options]
//             in: "param.<name>" (order: metadata "names", comma separated),
//                 "grad.<step>.<name>" (absent: no gradient that step)
//             out: "param.<name>" after --steps updates, "lr" and "norm"
//                  (float64 [steps]: the rate used and the pre-clip norm)
//             --resume-at K exports the state after K steps, rebuilds the
//             optimizer and schedule from it, and continues (checkpoint path).
//   loss      in: "logits", "labels"; out: "loss", "grad" (d loss / d logits)
//             --kind classification|lm, --label-smoothing, --sum
//   metrics   in: "predictions", "labels" (int64) and/or "x", "y" (float64),
//             or "logits" + "labels" with --task; prints a JSON object.
//   decay     --input names.txt (one name a line): prints the JSON list of
//             names parameter_decay_excluded keeps out of weight decay.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/shape_text.h"
#include "core/io/safetensors.h"
#include "core/train/losses.h"
#include "core/train/lr_schedule.h"
#include "core/train/metrics.h"
#include "core/train/optimizer.h"

namespace {

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::stringstream stream(text);
  for (std::string name; std::getline(stream, name, ',');) names.push_back(name);
  return names;
}

struct OptimizeArgs {
  double lr = 1e-3, max_norm = 0;
  dsee::AdamWOptions adamw;
  bool no_exclude = false;
  std::string schedule = "linear";
  dsee::LrScheduleOptions schedule_options;
  std::int64_t steps = 1, total_steps = 0, resume_at = -1;
};

void run_optimize(const std::string& input, const std::string& output, OptimizeArgs args) {
  const auto file = dsee::SafetensorsFile::open(input);
  DSEE_CHECK(file->metadata().count("names"), "'{}' has no 'names' metadata", input);
  const std::vector<std::string> names = split_names(file->metadata().at("names"));
  std::vector<dsee::NamedTensor> parameters;
  for (const auto& name : names)
    parameters.push_back({name, file->tensor("param." + name).clone().set_requires_grad(true)});
  args.adamw.exclude_bias_and_norm = !args.no_exclude;
  args.schedule_options.kind = dsee::lr_schedule_kind_from_name(args.schedule);
  const std::int64_t total = args.total_steps > 0 ? args.total_steps : args.steps;
  auto optimizer = std::make_unique<dsee::AdamW>(parameters, args.adamw);
  auto schedule = std::make_unique<dsee::LrSchedule>(args.lr, args.schedule_options, total);
  at::Tensor lrs = at::zeros({args.steps}, at::kDouble), norms = at::zeros({args.steps}, at::kDouble);
  for (std::int64_t step = 0; step < args.steps; ++step) {
    if (step == args.resume_at) {
      // What a checkpoint round trip does: state out, fresh objects, state in.
      std::vector<dsee::NamedTensor> state;
      for (const auto& [name, tensor] : optimizer->state_export()) state.push_back({name, tensor.clone()});
      const std::int64_t schedule_step = schedule->step();
      optimizer = std::make_unique<dsee::AdamW>(parameters, args.adamw);
      optimizer->state_import(state);
      schedule = std::make_unique<dsee::LrSchedule>(args.lr, args.schedule_options, total);
      schedule->set_step(schedule_step);
    }
    for (auto& [name, tensor] : parameters) {
      const std::string grad_name = "grad." + std::to_string(step) + "." + name;
      tensor.mutable_grad() = file->contains(grad_name) ? file->tensor(grad_name).clone() : at::Tensor();
    }
    norms[step] = dsee::grad_clip_norm(parameters, args.max_norm);
    lrs[step] = schedule->lr();
    optimizer->step(schedule->lr());
    schedule->advance();
  }
  dsee::NamedTensors out = {{"lr", lrs}, {"norm", norms}};
  for (const auto& [name, tensor] : parameters) out.push_back({"param." + name, tensor.detach()});
  for (const auto& [name, tensor] : optimizer->state_export()) out.push_back({"state." + name, tensor.cpu()});
  dsee::safetensors_save(output, out);
}

void run_loss(const std::string& input, const std::string& output, const std::string& kind, double smoothing,
              bool sum) {
  const auto file = dsee::SafetensorsFile::open(input);
  const at::Tensor logits = file->tensor("logits").clone().set_requires_grad(true);
  const at::Tensor labels = file->tensor("labels");
  at::Tensor loss;
  if (kind == "classification") {
    loss = dsee::sequence_classification_loss(logits, labels);
  } else {
    DSEE_CHECK(kind == "lm", "--kind must be classification or lm, got '{}'", kind);
    loss = dsee::causal_lm_loss(logits, labels, smoothing, sum ? dsee::LossReduction::sum : dsee::LossReduction::mean);
  }
  const at::Tensor grad = torch::autograd::grad({loss}, {logits})[0];
  dsee::NamedTensors out = {{"loss", loss.detach()}, {"grad", grad}};
  if (kind == "lm") out.push_back({"targets", at::scalar_tensor(dsee::causal_lm_target_count(labels), at::kLong)});
  dsee::safetensors_save(output, out);
}

nlohmann::json json_number(double value) { return std::isnan(value) ? nlohmann::json("nan") : nlohmann::json(value); }

void run_metrics(const std::string& input, const std::string& task) {
  const auto file = dsee::SafetensorsFile::open(input);
  nlohmann::json result;
  if (!task.empty()) {
    for (const auto& [name, value] :
         dsee::glue_metrics(dsee::glue_task_from_name(task), file->tensor("logits"), file->tensor("labels")))
      result[name] = json_number(value);
    result["main_metric"] = dsee::glue_task_info(dsee::glue_task_from_name(task)).main_metric;
  }
  if (file->contains("predictions")) {
    const at::Tensor p = file->tensor("predictions").contiguous(), l = file->tensor("labels").contiguous();
    const std::span<const std::int64_t> ps(p.data_ptr<std::int64_t>(), p.numel()),
        ls(l.data_ptr<std::int64_t>(), l.numel());
    result["accuracy"] = dsee::accuracy(ps, ls);
    result["f1"] = dsee::f1_positive(ps, ls);
    result["mcc"] = dsee::matthews_correlation(ps, ls);
  }
  if (file->contains("x")) {
    const at::Tensor x = file->tensor("x").contiguous(), y = file->tensor("y").contiguous();
    const std::span<const double> xs(x.data_ptr<double>(), x.numel()), ys(y.data_ptr<double>(), y.numel());
    result["pearson"] = json_number(dsee::pearson_correlation(xs, ys));
    result["spearman"] = json_number(dsee::spearman_correlation(xs, ys));
  }
  std::printf("%s\n", result.dump().c_str());
}

void run_decay(const std::string& input) {
  std::ifstream names(input);
  DSEE_CHECK(names, "cannot open '{}'", input);
  nlohmann::json excluded = nlohmann::json::array();
  for (std::string name; std::getline(names, name);)
    if (!name.empty() && dsee::parameter_decay_excluded(name)) excluded.push_back(name);
  std::printf("%s\n", excluded.dump().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainer_driver: dsee's optimizer, schedules, losses and metrics (parity tests)"};
  app.require_subcommand(1);
  std::string input, output, kind = "classification", task;
  OptimizeArgs args;
  double smoothing = 0;
  bool sum = false;
  auto* optimize = app.add_subcommand("optimize", "AdamW + schedule + clipping over given gradients");
  auto* loss = app.add_subcommand("loss", "a loss and its gradient");
  auto* metrics = app.add_subcommand("metrics", "GLUE metrics as JSON");
  auto* decay = app.add_subcommand("decay", "names kept out of weight decay");
  for (auto* sub : {optimize, loss, metrics, decay}) sub->add_option("--input", input)->required();
  for (auto* sub : {optimize, loss}) sub->add_option("--output", output)->required();
  optimize->add_option("--lr", args.lr);
  optimize->add_option("--beta1", args.adamw.beta1);
  optimize->add_option("--beta2", args.adamw.beta2);
  optimize->add_option("--eps", args.adamw.eps);
  optimize->add_option("--weight-decay", args.adamw.weight_decay);
  optimize->add_flag("--no-exclude", args.no_exclude, "decay biases and norm weights too");
  optimize->add_option("--schedule", args.schedule);
  optimize->add_option("--warmup-steps", args.schedule_options.warmup_steps);
  optimize->add_option("--warmup-ratio", args.schedule_options.warmup_ratio);
  optimize->add_option("--num-cycles", args.schedule_options.num_cycles);
  optimize->add_option("--steps", args.steps);
  optimize->add_option("--total-steps", args.total_steps, "schedule length (default: --steps)");
  optimize->add_option("--max-norm", args.max_norm, "clip at this global norm (0: no clipping)");
  optimize->add_option("--resume-at", args.resume_at, "export/import the state before this step");
  loss->add_option("--kind", kind);
  loss->add_option("--label-smoothing", smoothing);
  loss->add_flag("--sum", sum);
  metrics->add_option("--task", task);
  CLI11_PARSE(app, argc, argv);
  try {
    at::set_num_threads(1);
    if (*optimize) run_optimize(input, output, args);
    if (*loss) run_loss(input, output, kind, smoothing, sum);
    if (*metrics) run_metrics(input, task);
    if (*decay) run_decay(input);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "trainer_driver: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
