// tuning_driver: one LoRA forward/backward step of dsee for the parity test
// against PEFT (tests/parity/test_tuning_peft.py). Not a user command.
//
// tuning_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS
// loads the HF folder, attaches lora (r = RANK, alpha = ALPHA, TARGETS
// comma-separated adapted.h patterns), overwrites every A and B with
// "<prefix>.lora_A" / "<prefix>.lora_B" from IN (lora_from_file.h, shared
// with precision_driver), runs the model on IN's "input_ids" (and
// "attention_mask" when present), takes
// loss = (logits · IN's "loss_weights").sum() and backpropagates. OUT holds
// "logits" and "<name>.grad" for every trainable tensor (tuning.h names).
//
// tuning_driver train MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA
//                     TARGETS STEPS BATCH LR WARMUP MAX_NORM WEIGHT_DECAY
// trains LoRA as the pipeline's train stage does (tuning_attach, core's
// Trainer with AdamW, the linear schedule with WARMUP steps, clipping at
// MAX_NORM, sequence_classification_loss) for STEPS optimizer steps over
// IN's "input_ids" [N, seq] / "labels" [N] in order, BATCH rows a step
// (wrapping around each epoch), A and B first copied from IN as above. OUT
// holds "loss" (float64 [STEPS], per step) and every trainable tensor after
// training under its tuning.h name.
//
// tuning_driver train-lm MODEL_DIR IN OUT RANK ALPHA TARGETS STEPS BATCH LR
//                        WARMUP MAX_NORM WEIGHT_DECAY ACCUMULATION SMOOTHING
// the same for causal LM training (test_lora_training_peft.py's GPT-2 case):
// IN's "input_ids", "attention_mask" and "labels" are [N, seq] (labels -100
// on context and padding), ACCUMULATION micro-batches of BATCH rows a step,
// the Trainer in causal_lm mode with label_smoothing SMOOTHING (token-weighted
// accumulation). The per-step losses are the trainer's own, in OUT.jsonl
// (its metrics.jsonl); OUT holds the trainable tensors.
#include <ATen/ATen.h>

#include <cstdio>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "core/model/pretrained_model.h"
#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "lora_from_file.h"

namespace {

// Consecutive rows, no shuffling: the order the Python loop uses.
class RowBatches final : public dsee::BatchSource {
 public:
  RowBatches(at::Tensor ids, at::Tensor labels, std::int64_t batch, at::Tensor mask = {})
      : ids_(std::move(ids)), labels_(std::move(labels)), mask_(std::move(mask)), batch_(batch) {}
  std::int64_t batches_per_epoch() const override { return ids_.size(0) / batch_; }
  void start_epoch(std::int64_t) override { next_ = 0; }
  std::optional<dsee::TrainBatch> next() override {
    if (next_ >= batches_per_epoch()) return std::nullopt;
    dsee::TrainBatch out;
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

int train(char** argv, bool lm) {
  const auto [model, tuning, in] =
      dsee::lora_from_file(argv[2], argv[3], std::stoll(argv[5]), std::stod(argv[6]), argv[7]);
  dsee::TrainerOptions trainer_options;
  if (lm) {
    trainer_options.causal_lm = true;
    trainer_options.grad_accumulation = std::stoll(argv[14]);
    trainer_options.label_smoothing = std::stod(argv[15]);
    trainer_options.metrics_path = std::string(argv[4]) + ".jsonl";
  }
  trainer_options.max_steps = std::stoll(argv[8]);
  trainer_options.lr = std::stod(argv[10]);
  trainer_options.schedule.kind = dsee::LrScheduleKind::linear;
  trainer_options.schedule.warmup_steps = std::stoll(argv[11]);
  trainer_options.max_grad_norm = std::stod(argv[12]);
  trainer_options.adamw.weight_decay = std::stod(argv[13]);
  trainer_options.log_every = 0;
  RowBatches batches(in->tensor("input_ids").clone(), in->tensor("labels").clone(), std::stoll(argv[9]),
                     lm ? in->tensor("attention_mask").clone() : at::Tensor());
  std::vector<double> losses;
  auto* m = model.get();
  auto* t = tuning.get();
  const auto loss = [&](const dsee::TrainBatch& batch) {
    t->set_training(true);
    dsee::ModelInput input;
    input.input_ids = batch.tensors.at("input_ids");
    if (lm) {
      input.attention_mask = batch.tensors.at("attention_mask");
      return m->forward(input).logits;  // the trainer takes the loss
    }
    auto value = dsee::sequence_classification_loss(m->forward(input).logits, batch.tensors.at("labels"));
    losses.push_back(value.item<double>());
    return value;
  };
  dsee::Trainer trainer(tuning->trainable_parameters(), trainer_options);
  const auto result = trainer.run(batches, loss);
  DSEE_CHECK(result.steps == trainer_options.max_steps, "trained {} steps, expected {}", result.steps,
             trainer_options.max_steps);
  dsee::NamedTensors out;
  if (!lm) out.emplace_back("loss", at::tensor(losses, at::kDouble));
  for (const auto& [name, tensor] : tuning->trainable_parameters())
    if (tensor.numel() > 0) out.emplace_back(name, tensor.detach());
  dsee::safetensors_save(argv[4], out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool lm = argc == 16 && std::string(argv[1]) == "train-lm";
  if ((argc == 14 && std::string(argv[1]) == "train") || lm) {
    try {
      return train(argv, lm);
    } catch (const dsee::Error& e) {
      std::fprintf(stderr, "tuning_driver: %s\n", e.what());
      return 1;
    }
  }
  if (argc != 7) {
    std::fprintf(stderr,
                 "usage: tuning_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS\n"
                 "       tuning_driver train MODEL_DIR IN OUT RANK ALPHA TARGETS STEPS BATCH LR WARMUP MAX_NORM "
                 "WEIGHT_DECAY\n"
                 "       tuning_driver train-lm MODEL_DIR IN OUT RANK ALPHA TARGETS STEPS BATCH LR WARMUP MAX_NORM "
                 "WEIGHT_DECAY ACCUMULATION SMOOTHING\n");
    return 2;
  }
  try {
    const auto [model, tuning, in] =
        dsee::lora_from_file(argv[1], argv[2], std::stoll(argv[4]), std::stod(argv[5]), argv[6]);
    dsee::ModelInput input;
    input.input_ids = in->tensor("input_ids").clone();
    if (in->contains("attention_mask")) input.attention_mask = in->tensor("attention_mask").clone();
    const auto logits = model->forward(input).logits;
    (logits * in->tensor("loss_weights")).sum().backward();

    dsee::NamedTensors out{{"logits", logits.detach()}};
    for (const auto& [name, tensor] : tuning->trainable_parameters()) {
      DSEE_CHECK(tensor.grad().defined(), "no gradient reached '{}'", name);
      out.emplace_back(name + ".grad", tensor.grad());
    }
    dsee::safetensors_save(argv[3], out);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "tuning_driver: %s\n", e.what());
    return 1;
  }
  return 0;
}
