// tuning_driver: one LoRA forward/backward step of dsee for the parity test
// against PEFT (tests/parity/test_tuning_peft.py). Not a user command.
//
// tuning_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS
// loads the HF folder, attaches lora (r = RANK, alpha = ALPHA, TARGETS
// comma-separated adapted.h patterns), overwrites every A and B with
// "<prefix>.lora_A" / "<prefix>.lora_B" from IN, runs the model on IN's
// "input_ids" (and "attention_mask" when present), takes
// loss = (logits · IN's "loss_weights").sum() and backpropagates. OUT holds
// "logits" and "<name>.grad" for every trainable tensor (tuning.h names).
#include <ATen/ATen.h>

#include <cstdio>
#include <sstream>

#include "core/pretrained_model.h"
#include "core/safetensors.h"
#include "core/tuning.h"
#include "data/error.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: tuning_driver MODEL_DIR IN.safetensors OUT.safetensors RANK ALPHA TARGETS\n");
    return 2;
  }
  try {
    auto model = dsee::model_load(argv[1]);
    const auto in = dsee::SafetensorsFile::open(argv[2]);
    dsee::TuningOptions options;
    options.method = dsee::TuningMethod::lora;
    options.rank = std::stoll(argv[4]);
    options.alpha = std::stod(argv[5]);
    std::stringstream targets(argv[6]);
    for (std::string t; std::getline(targets, t, ',');) options.target_modules.push_back(t);
    auto tuning = dsee::tuning_attach(*model, options);
    {
      at::NoGradGuard no_grad;
      for (auto* u : tuning->updates()) {
        u->lora_A.copy_(in->tensor(u->matrix.prefix + ".lora_A"));
        u->lora_B.copy_(in->tensor(u->matrix.prefix + ".lora_B"));
      }
    }
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
