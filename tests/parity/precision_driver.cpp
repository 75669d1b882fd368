// precision_driver: tuning_driver's LoRA forward/backward step on a model
// loaded in bf16 (run.precision = bf16: frozen weights bf16, A, B and the
// task head fp32), for the parity test against PEFT on a bf16 base model
// (tests/parity/test_precision_peft.py). Not a user command.
//
// precision_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS
// as tuning_driver (tests/parity/tuning_driver.cpp): A and B from IN, loss =
// (logits · IN's "loss_weights").sum() in fp32, backward; OUT holds "logits"
// (in their dtype) and "<name>.grad" for every trainable tensor, plus
// "<name>.dtype_is_fp32" (a 0-d uint8, 1 when the trainable tensor is fp32).
#include <ATen/ATen.h>

#include <cstdio>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/tuning.h"
#include "lora_from_file.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: precision_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS\n");
    return 2;
  }
  try {
    dsee::ModelLoadOptions load;
    load.dtype = dsee::model_dtype_of_precision("bf16");
    const auto [model, tuning, in] =
        dsee::lora_from_file(argv[1], argv[2], std::stoll(argv[4]), std::stod(argv[5]), argv[6], load);
    dsee::ModelInput input;
    input.input_ids = in->tensor("input_ids").clone();
    if (in->contains("attention_mask")) input.attention_mask = in->tensor("attention_mask").clone();
    const auto logits = model->forward(input).logits;
    (logits.to(at::kFloat) * in->tensor("loss_weights")).sum().backward();

    dsee::NamedTensors out{{"logits", logits.detach()}};
    for (const auto& [name, tensor] : tuning->trainable_parameters()) {
      DSEE_CHECK(tensor.grad().defined(), "no gradient reached '{}'", name);
      out.emplace_back(name + ".grad", tensor.grad());
      out.emplace_back(name + ".dtype_is_fp32", at::scalar_tensor(tensor.scalar_type() == at::kFloat, at::kByte));
    }
    dsee::safetensors_save(argv[3], out);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "precision_driver: %s\n", e.what());
    return 1;
  }
  return 0;
}
