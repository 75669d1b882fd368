// On a GPU machine: mixed precision (run.precision = bf16) on CUDA — the
// checks of tests/unit/test_precision.cpp on cuda:0 (dtypes of frozen and
// trainable tensors and AdamW moments after Trainer steps, bf16 vs fp32
// logits and loss, bf16 training lowers the loss), then the time of one DSEE
// training step (forward, backward, AdamW) of a BERT-base-sized model (hidden
// 768, 12 heads, FFN 3072, 4 layers, vocab 30522, batch 32 × 128 tokens,
// r = 16, c = 64) in fp32 and in bf16, printed with the frozen weights'
// bytes. Without CUDA: exits 77, which ctest reports as skipped.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include "../unit/precision_checks.h"

namespace dsee {
namespace {

using namespace precision_checks;

const c10::Device kCuda(c10::kCUDA, 0);
const std::vector<nlohmann::json> kFamilies = {bert_json(), roberta_json(), gpt2_json()};

TEST(PrecisionCuda, Bf16KeepsFrozenWeightsBf16AndTrainableStateFp32) {
  for (const auto& json : kFamilies) check_dtypes_after_training(json, kCuda);
}

// The CPU bounds (tests/unit/test_precision.cpp): CUDA's bf16 kernels round
// at the same points.
TEST(PrecisionCuda, Bf16ForwardIsCloseToFp32) {
  for (const auto& json : kFamilies) {
    const auto d = bf16_deviation(json, kCuda);
    std::printf("cuda %s bf16 vs fp32: logits %.2e, loss %.2e relative\n",
                json.at("model_type").get<std::string>().c_str(), d.logits, d.loss);
    EXPECT_LE(d.logits, 2e-2) << json.at("model_type");
    EXPECT_LE(d.loss, 1e-2) << json.at("model_type");
  }
}

TEST(PrecisionCuda, Bf16TrainingLowersTheLoss) {
  for (const auto& json : kFamilies) {
    const auto [before, after] = bf16_training_losses(json, kCuda, 30);
    EXPECT_LT(after, 0.8 * before) << json.at("model_type");
  }
}

nlohmann::json bert_base_json(std::int64_t layers) {
  return {{"model_type", "bert"},
          {"vocab_size", 30522},
          {"hidden_size", 768},
          {"num_hidden_layers", layers},
          {"num_attention_heads", 12},
          {"intermediate_size", 3072},
          {"max_position_embeddings", 512},
          {"type_vocab_size", 2},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"architectures", {"BertForSequenceClassification"}}};
}

struct StepTiming {
  double ms_per_step = 0;
  double frozen_megabytes = 0;
  double final_loss = 0;
};

StepTiming time_training_step(at::ScalarType dtype) {
  auto config = model_config_parse(bert_base_json(4), "bert-base-4/config.json");
  auto model = std::make_unique<EncoderModel>(config, true, dtype, kCuda);
  at::manual_seed(1);
  for (const auto& slot : model->tensor_slots()) slot.tensor->copy_(at::randn(slot.tensor->sizes(), kCuda) * 0.02);
  auto tuning = tuning_attach(*model, dsee_options(16), random_omega(*model, 64, 2));
  std::set<const void*> trainable;
  for (const auto& [name, t] : tuning->trainable_parameters()) trainable.insert(t.unsafeGetTensorImpl());
  StepTiming timing;
  for (const auto& slot : model->tensor_slots())
    if (!trainable.contains(slot.tensor->unsafeGetTensorImpl()))
      timing.frozen_megabytes += double(slot.tensor->nbytes()) / (1 << 20);

  const auto batch = random_batch(*model, 32, 128, 3, kCuda);
  constexpr std::int64_t kWarmup = 3, kTimed = 10;
  Trainer trainer(tuning->trainable_parameters(), trainer_options(kWarmup + kTimed, 1e-4));
  tuning->set_training(true);
  std::int64_t calls = 0;
  std::chrono::steady_clock::time_point start;
  RepeatedBatch batches(batch, 1);
  trainer.run(batches, [&](const TrainBatch& b) {
    if (calls++ == kWarmup) {  // the forward of the first timed step
      torch::cuda::synchronize();
      start = std::chrono::steady_clock::now();
    }
    return loss_of(*model, b);
  });
  torch::cuda::synchronize();
  // The window: the kTimed last steps, forward to AdamW update.
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  timing.ms_per_step = 1e3 * seconds / double(kTimed);
  at::NoGradGuard no_grad;
  tuning->set_training(false);
  timing.final_loss = loss_of(*model, batch).item<double>();
  return timing;
}

TEST(PrecisionCuda, TrainingStepTimeBf16VsFp32) {
  // TF32 off (libtorch's default for matmuls): fp32 is true fp32.
  at::globalContext().setAllowTF32CuBLAS(false);
  const auto fp32 = time_training_step(at::kFloat);
  const auto bf16 = time_training_step(at::kBFloat16);
  std::printf(
      "BERT-base-sized, 4 layers, batch 32 x 128, dsee r=16 c=64, one training step:\n"
      "  fp32: %.2f ms/step, frozen weights %.1f MiB, loss after 13 steps %.4f\n"
      "  bf16: %.2f ms/step, frozen weights %.1f MiB, loss after 13 steps %.4f\n"
      "  speed-up %.2fx\n",
      fp32.ms_per_step, fp32.frozen_megabytes, fp32.final_loss, bf16.ms_per_step, bf16.frozen_megabytes,
      bf16.final_loss, fp32.ms_per_step / bf16.ms_per_step);
  EXPECT_NEAR(bf16.frozen_megabytes, fp32.frozen_megabytes / 2, 1e-6 * fp32.frozen_megabytes);
  EXPECT_TRUE(std::isfinite(bf16.final_loss));
}

}  // namespace
}  // namespace dsee

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device on this machine\n");
    return 77;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
