// The trainer's pieces against torch.optim.AdamW, transformers' schedules,
// clip_grad_norm_, torch losses, scikit-learn and scipy metrics
// (test_optimizer.py). Every mode runs with one intra-op thread.
//
//   optimize  in: "param.<name>" (order: the request's "names"),
//             "grad.<step>.<name>" (absent: no gradient that step); request:
//             lr, beta1, beta2, eps, weight_decay, exclude (biases and norm
//             weights kept out of decay, default true), schedule,
//             warmup_steps, warmup_ratio, num_cycles, steps, total_steps
//             (schedule length, default steps), max_norm (0: no clipping),
//             resume_at (export the state before this step, rebuild the
//             optimizer and schedule from it, go on: the checkpoint path).
//             out: "param.<name>" after the steps, "state.<...>" (AdamW's
//             state_export), "lr" and "norm" (float64 [steps]: the rate used
//             and the pre-clip norm).
//   loss      in: "logits", "labels"; request: kind (classification | lm),
//             label_smoothing, sum. out: "loss", "grad" (d loss / d logits),
//             for lm "targets" (the counted tokens).
//   metrics   in: "predictions", "labels" (int64) and/or "x", "y" (float64),
//             or "logits" + "labels" with the request's "task"; result: the
//             metrics by name (NaN as "nan"), with a task its "main_metric".
//   decay     request: "names"; result {"excluded": the names
//             parameter_decay_excluded keeps out of weight decay}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <span>

#include "core/train/losses.h"
#include "core/train/lr_schedule.h"
#include "core/train/metrics.h"
#include "core/train/optimizer.h"
#include "parity_request.h"

namespace dsee::parity {
namespace {

nlohmann::json json_number(double value) { return std::isnan(value) ? nlohmann::json("nan") : nlohmann::json(value); }

}  // namespace

nlohmann::json optimize(const Request& request) {
  at::set_num_threads(1);
  const SafetensorsFile& file = request.in();
  NamedTensors parameters;
  for (const auto& name : request.get<std::vector<std::string>>("names"))
    parameters.push_back({name, file.tensor("param." + name).clone().set_requires_grad(true)});
  AdamWOptions adamw;
  adamw.beta1 = request.get<double>("beta1", adamw.beta1);
  adamw.beta2 = request.get<double>("beta2", adamw.beta2);
  adamw.eps = request.get<double>("eps", adamw.eps);
  adamw.weight_decay = request.get<double>("weight_decay", adamw.weight_decay);
  adamw.exclude_bias_and_norm = request.get<bool>("exclude", true);
  LrScheduleOptions schedule_options;
  schedule_options.kind = lr_schedule_kind_from_name(request.get<std::string>("schedule", "linear"));
  schedule_options.warmup_steps = request.get<std::int64_t>("warmup_steps", schedule_options.warmup_steps);
  schedule_options.warmup_ratio = request.get<double>("warmup_ratio", schedule_options.warmup_ratio);
  schedule_options.num_cycles = request.get<double>("num_cycles", schedule_options.num_cycles);
  const double lr = request.get<double>("lr", 1e-3), max_norm = request.get<double>("max_norm", 0.0);
  const std::int64_t steps = request.get<std::int64_t>("steps", 1);
  const std::int64_t total = request.get<std::int64_t>("total_steps", steps);
  const std::int64_t resume_at = request.get<std::int64_t>("resume_at", -1);

  auto optimizer = std::make_unique<AdamW>(parameters, adamw);
  auto schedule = std::make_unique<LrSchedule>(lr, schedule_options, total);
  at::Tensor lrs = at::zeros({steps}, at::kDouble), norms = at::zeros({steps}, at::kDouble);
  for (std::int64_t step = 0; step < steps; ++step) {
    if (step == resume_at) {
      // What a checkpoint round trip does: state out, fresh objects, state in.
      NamedTensors state;
      for (const auto& [name, tensor] : optimizer->state_export()) state.push_back({name, tensor.clone()});
      const std::int64_t schedule_step = schedule->step();
      optimizer = std::make_unique<AdamW>(parameters, adamw);
      optimizer->state_import(state);
      schedule = std::make_unique<LrSchedule>(lr, schedule_options, total);
      schedule->set_step(schedule_step);
    }
    for (auto& [name, tensor] : parameters) {
      const std::string grad_name = "grad." + std::to_string(step) + "." + name;
      tensor.mutable_grad() = file.contains(grad_name) ? file.tensor(grad_name).clone() : at::Tensor();
    }
    norms[step] = grad_clip_norm(parameters, max_norm);
    lrs[step] = schedule->lr();
    optimizer->step(schedule->lr());
    schedule->advance();
  }
  NamedTensors out = {{"lr", lrs}, {"norm", norms}};
  for (const auto& [name, tensor] : parameters) out.push_back({"param." + name, tensor.detach()});
  for (const auto& [name, tensor] : optimizer->state_export()) out.push_back({"state." + name, tensor.cpu()});
  request.write_out(out);
  return nlohmann::json::object();
}

nlohmann::json loss(const Request& request) {
  at::set_num_threads(1);
  const at::Tensor logits = request.in().tensor("logits").clone().set_requires_grad(true);
  const at::Tensor labels = request.in().tensor("labels");
  const auto kind = request.get<std::string>("kind", "classification");
  at::Tensor value;
  if (kind == "classification") {
    value = sequence_classification_loss(logits, labels);
  } else {
    DSEE_CHECK(kind == "lm", "loss: \"kind\" must be classification or lm, got '{}'", kind);
    value = causal_lm_loss(logits, labels, request.get<double>("label_smoothing", 0.0),
                           request.get<bool>("sum", false) ? LossReduction::sum : LossReduction::mean);
  }
  const at::Tensor grad = torch::autograd::grad({value}, {logits})[0];
  NamedTensors out = {{"loss", value.detach()}, {"grad", grad}};
  if (kind == "lm") out.push_back({"targets", at::scalar_tensor(causal_lm_target_count(labels), at::kLong)});
  request.write_out(out);
  return nlohmann::json::object();
}

nlohmann::json metrics(const Request& request) {
  at::set_num_threads(1);
  const SafetensorsFile& file = request.in();
  nlohmann::json result = nlohmann::json::object();
  if (request.has("task")) {
    const GlueTask task = glue_task_from_name(request.get<std::string>("task"));
    for (const auto& [name, value] : glue_metrics(task, file.tensor("logits"), file.tensor("labels")))
      result[name] = json_number(value);
    result["main_metric"] = glue_task_info(task).main_metric;
  }
  if (file.contains("predictions")) {
    const at::Tensor p = file.tensor("predictions").contiguous(), l = file.tensor("labels").contiguous();
    const std::span<const std::int64_t> ps(p.data_ptr<std::int64_t>(), p.numel()),
        ls(l.data_ptr<std::int64_t>(), l.numel());
    result["accuracy"] = accuracy(ps, ls);
    result["f1"] = f1_positive(ps, ls);
    result["mcc"] = matthews_correlation(ps, ls);
  }
  if (file.contains("x")) {
    const at::Tensor x = file.tensor("x").contiguous(), y = file.tensor("y").contiguous();
    const std::span<const double> xs(x.data_ptr<double>(), x.numel()), ys(y.data_ptr<double>(), y.numel());
    result["pearson"] = json_number(pearson_correlation(xs, ys));
    result["spearman"] = json_number(spearman_correlation(xs, ys));
  }
  return result;
}

nlohmann::json decay(const Request& request) {
  nlohmann::json excluded = nlohmann::json::array();
  for (const auto& name : request.get<std::vector<std::string>>("names"))
    if (parameter_decay_excluded(name)) excluded.push_back(name);
  return {{"excluded", excluded}};
}

}  // namespace dsee::parity
