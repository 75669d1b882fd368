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
#include <ATen/ATen.h>

#include <cstdio>

#include "core/losses.h"
#include "core/pretrained_model.h"
#include "core/safetensors.h"
#include "core/trainer.h"
#include "core/tuning.h"
#include "data/error.h"
#include "lora_from_file.h"

namespace {

// Consecutive rows, no shuffling: the order the Python loop uses.
class RowBatches final : public dsee::BatchSource {
 public:
  RowBatches(at::Tensor ids, at::Tensor labels, std::int64_t batch)
      : ids_(std::move(ids)), labels_(std::move(labels)), batch_(batch) {}
  std::int64_t batches_per_epoch() const override { return ids_.size(0) / batch_; }
  void start_epoch(std::int64_t) override { next_ = 0; }
  std::optional<dsee::TrainBatch> next() override {
    if (next_ >= batches_per_epoch()) return std::nullopt;
    dsee::TrainBatch out;
    out.tensors["input_ids"] = ids_.narrow(0, next_ * batch_, batch_);
    out.tensors["labels"] = labels_.narrow(0, next_ * batch_, batch_);
    out.samples = batch_;
    ++next_;
    return out;
  }
  std::int64_t sample_index() const override { return next_ * batch_; }
  void seek(std::int64_t, std::int64_t sample_index) override { next_ = sample_index / batch_; }

 private:
  at::Tensor ids_, labels_;
  std::int64_t batch_, next_ = 0;
};

int train(char** argv) {
  const auto [model, tuning, in] =
      dsee::lora_from_file(argv[2], argv[3], std::stoll(argv[5]), std::stod(argv[6]), argv[7]);
  dsee::TrainerOptions trainer_options;
  trainer_options.max_steps = std::stoll(argv[8]);
  trainer_options.lr = std::stod(argv[10]);
  trainer_options.schedule.kind = dsee::LrScheduleKind::linear;
  trainer_options.schedule.warmup_steps = std::stoll(argv[11]);
  trainer_options.max_grad_norm = std::stod(argv[12]);
  trainer_options.adamw.weight_decay = std::stod(argv[13]);
  trainer_options.log_every = 0;
  RowBatches batches(in->tensor("input_ids").clone(), in->tensor("labels").clone(), std::stoll(argv[9]));
  std::vector<double> losses;
  auto* m = model.get();
  auto* t = tuning.get();
  const auto loss = [&](const dsee::TrainBatch& batch) {
    t->set_training(true);
    dsee::ModelInput input;
    input.input_ids = batch.tensors.at("input_ids");
    auto value = dsee::sequence_classification_loss(m->forward(input).logits, batch.tensors.at("labels"));
    losses.push_back(value.item<double>());
    return value;
  };
  dsee::Trainer trainer(tuning->trainable_parameters(), trainer_options);
  const auto result = trainer.run(batches, loss);
  DSEE_CHECK(result.steps == trainer_options.max_steps, "trained {} steps, expected {}", result.steps,
             trainer_options.max_steps);
  std::vector<std::pair<std::string, at::Tensor>> out{{"loss", at::tensor(losses, at::kDouble)}};
  for (const auto& [name, tensor] : tuning->trainable_parameters())
    if (tensor.numel() > 0) out.emplace_back(name, tensor.detach());
  dsee::safetensors_save(argv[4], out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 14 && std::string(argv[1]) == "train") {
    try {
      return train(argv);
    } catch (const dsee::Error& e) {
      std::fprintf(stderr, "tuning_driver: %s\n", e.what());
      return 1;
    }
  }
  if (argc != 7) {
    std::fprintf(stderr,
                 "usage: tuning_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS\n"
                 "       tuning_driver train MODEL_DIR IN OUT RANK ALPHA TARGETS STEPS BATCH LR WARMUP MAX_NORM "
                 "WEIGHT_DECAY\n");
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

    std::vector<std::pair<std::string, at::Tensor>> out{{"logits", logits.detach()}};
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
