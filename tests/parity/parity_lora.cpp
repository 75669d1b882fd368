// LoRA against PEFT (test_tuning_peft.py, test_precision_peft.py,
// test_lora_training_peft.py). Both modes read the tuning method, rank,
// alpha, target modules and run.precision from "recipe" (a TOML recipe text)
// with the pipeline's own functions (recipes/recipe.h), load "model" (a
// Hugging Face folder) and overwrite every A and B with "<prefix>.lora_A"
// [r, in] / "<prefix>.lora_B" [out, r] from "in" (tuning.method adapter:
// every "<module>.adapter.{down,up}.{weight,bias}"; tuning.method prefix:
// every "prefix.*"), so both stacks start from the adapters the Python side
// drew.
//
//   lora-step   one forward on in's "input_ids" (and "attention_mask" when
//               present), loss = (logits · in's "loss_weights").sum() in fp32,
//               backward. out: "logits" (in their dtype) and "<name>.grad" of
//               every trainable tensor; result {"trainable_dtype": {name:
//               safetensors dtype}}.
//   lora-train  the recipe's training as the pipeline's train stage sets it up
//               (recipe_trainer_options: AdamW, the schedule and warm-up,
//               clipping, accumulation), over in's "input_ids" [N, seq] /
//               "labels" in order, train.batch_size / train.grad_accumulation
//               rows a micro-batch, no shuffling (the Python loop's order).
//               Sequence classification, or with "causal_lm": true the
//               trainer's causal LM mode (in's "attention_mask", labels
//               [N, seq], "label_smoothing"; token-weighted accumulation).
//               "metrics" names the trainer's metrics.jsonl (optional). out:
//               every trainable tensor after training; result {"steps",
//               "losses": the per-step loss the loss function returned
//               (classification only)}.
//   lora-generate  the lora-step model (adapters from "in") decoded by
//               generation_run (parity_generate.cpp): greedy or beam search.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "core/model/pretrained_model.h"
#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "parity_request.h"
#include "recipes/recipe.h"
#include "recipes/recipe_schema.h"

namespace dsee::parity {
namespace {

// Members in this order: `tuning` points into `model`, so it is destroyed first.
struct LoraModel {
  Recipe recipe;
  std::unique_ptr<PretrainedModel> model;
  std::shared_ptr<ModelTuning> tuning;
};

LoraModel lora_model(const Request& request) {
  LoraModel out{
      recipe_from_config(Config::parse(recipe_schema(), request.get<std::string>("recipe"), "the request's recipe")),
      {},
      {}};
  ModelLoadOptions load;
  load.dtype = model_dtype_of_precision(precision_name(out.recipe.run.precision));
  out.model = model_load(request.get<std::string>("model"), load);
  out.tuning = tuning_attach(*out.model, recipe_tuning_options(out.recipe));
  at::NoGradGuard no_grad;
  for (auto* u : out.tuning->updates()) {
    u->lora_A.copy_(request.in().tensor(u->matrix.prefix + ".lora_A"));
    u->lora_B.copy_(request.in().tensor(u->matrix.prefix + ".lora_B"));
  }
  // tuning.method adapter: every adapter tensor from "in" (the Python side's draws).
  for (auto& [name, tensor] : out.tuning->trainable_parameters())
    if (name.find(".adapter.") != std::string::npos || name.starts_with("prefix."))
      tensor.copy_(request.in().tensor(name));
  return out;
}

// Consecutive rows, no shuffling: the order the Python loop uses.
class RowBatches final : public BatchSource {
 public:
  RowBatches(at::Tensor ids, at::Tensor labels, std::int64_t batch, at::Tensor mask = {})
      : ids_(std::move(ids)), labels_(std::move(labels)), mask_(std::move(mask)), batch_(batch) {}
  std::int64_t batches_per_epoch() const override { return ids_.size(0) / batch_; }
  void start_epoch(std::int64_t) override { next_ = 0; }
  std::optional<TrainBatch> next() override {
    if (next_ >= batches_per_epoch()) return std::nullopt;
    TrainBatch out;
    out.tensors["input_ids"] = ids_.narrow(0, next_ * batch_, batch_);
    out.tensors["labels"] = labels_.narrow(0, next_ * batch_, batch_);
    if (mask_.defined()) out.tensors["attention_mask"] = mask_.narrow(0, next_ * batch_, batch_);
    out.samples = batch_;
    ++next_;
    return out;
  }
  std::int64_t sample_index() const override { return next_ * batch_; }
  void seek(std::int64_t, std::int64_t sample_index) override { next_ = sample_index / batch_; }

 private:
  at::Tensor ids_, labels_, mask_;
  std::int64_t batch_, next_ = 0;
};

}  // namespace

nlohmann::json lora_step(const Request& request) {
  const LoraModel lora = lora_model(request);
  ModelInput input;
  input.input_ids = request.in().tensor("input_ids").clone();
  if (request.in().contains("attention_mask")) input.attention_mask = request.in().tensor("attention_mask").clone();
  const at::Tensor logits = lora.model->forward(input).logits;
  const at::Tensor loss = (logits.to(at::kFloat) * request.in().tensor("loss_weights")).sum();
  if (loss.requires_grad()) loss.backward();  // not for GPT-2 with an empty prefix (nothing trains)

  NamedTensors out{{"logits", logits.detach()}};
  nlohmann::json dtypes = nlohmann::json::object();
  for (const auto& [name, tensor] : lora.tuning->trainable_parameters()) {
    if (tensor.numel() == 0) continue;  // an empty prefix (tuning.prefix_length = 0)
    DSEE_CHECK(tensor.grad().defined(), "no gradient reached '{}'", name);
    out.push_back({name + ".grad", tensor.grad()});
    dtypes[name] = safetensors_dtype(tensor.scalar_type(), name).name;
  }
  request.write_out(out);
  return {{"trainable_dtype", dtypes}};
}

nlohmann::json lora_train(const Request& request) {
  const LoraModel lora = lora_model(request);
  const bool lm = request.get<bool>("causal_lm", false);
  TrainerOptions options = recipe_trainer_options(lora.recipe, Stage::train);
  options.causal_lm = lm;
  options.label_smoothing = request.get<double>("label_smoothing", 0.0);
  options.metrics_path = request.get<std::string>("metrics", "");
  options.log_every = 0;
  const std::int64_t micro_batch = lora.recipe.train.batch_size / options.grad_accumulation;
  const SafetensorsFile& in = request.in();
  RowBatches batches(in.tensor("input_ids").clone(), in.tensor("labels").clone(), micro_batch,
                     lm ? in.tensor("attention_mask").clone() : at::Tensor());
  std::vector<double> losses;
  const auto loss = [&](const TrainBatch& batch) {
    lora.tuning->set_training(true);
    ModelInput input;
    input.input_ids = batch.tensors.at("input_ids");
    if (lm) {
      input.attention_mask = batch.tensors.at("attention_mask");
      return lora.model->forward(input).logits;  // the trainer takes the loss
    }
    at::Tensor value = sequence_classification_loss(lora.model->forward(input).logits, batch.tensors.at("labels"));
    losses.push_back(value.item<double>());
    return value;
  };
  Trainer trainer(lora.tuning->trainable_parameters(), options);
  const TrainResult result = trainer.run(batches, loss);
  NamedTensors out;
  for (const auto& [name, tensor] : lora.tuning->trainable_parameters())
    if (tensor.numel() > 0) out.push_back({name, tensor.detach()});
  request.write_out(out);
  nlohmann::json reply = {{"steps", result.steps}};
  if (!lm) reply["losses"] = losses;
  return reply;
}

// The LoRA model of lora-step (adapters from "in"), decoded by generation_run.
nlohmann::json lora_generate(const Request& request) {
  LoraModel lora = lora_model(request);
  return generation_run(request, *lora.model);
}

}  // namespace dsee::parity
