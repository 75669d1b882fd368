// EarlyBERT's coefficients against transformers with forward hooks
// (test_earlybert.py).
//
//   earlybert-step  loads "model" (a Hugging Face folder, fp32) and sets the
//                   coefficients from in's "earlybert.heads.<layer>" /
//                   "earlybert.neurons.<layer>" (either kind may be absent);
//                   one forward in evaluation mode on in's "input_ids" (and
//                   "attention_mask"), loss = (logits · in's "loss_weights").sum()
//                   + "l1" · Σ|c|, backward. out: "logits" and
//                   "<coefficient>.grad"; result {"heads": {layer: removed
//                   ids}, "neurons": {...}}: earlybert_plan with
//                   "heads_per_layer" / "neurons_per_layer" on those
//                   coefficients.
#include <ATen/ATen.h>

#include "core/model/pretrained_model.h"
#include "core/sparsity/earlybert.h"
#include "parity_request.h"

namespace dsee::parity {

nlohmann::json earlybert_step(const Request& request) {
  auto model = model_load(request.get<std::string>("model"), {.task = ModelTask::sequence_classification});
  const SafetensorsFile& in = request.in();
  EarlyBertCoefficients coefficients =
      earlybert_coefficients(*model, in.contains("earlybert.heads.0"), in.contains("earlybert.neurons.0"));
  {
    at::NoGradGuard no_grad;
    for (auto& [name, tensor] : coefficients.named()) tensor.copy_(in.tensor(name));
  }
  ModelInput input;
  input.input_ids = in.tensor("input_ids").clone();
  if (in.contains("attention_mask")) input.attention_mask = in.tensor("attention_mask").clone();
  at::Tensor logits;
  {
    EarlyBertScaling scaling(*model, coefficients);
    logits = model->forward(input).logits;
    const auto loss = (logits * in.tensor("loss_weights")).sum() + request.get<double>("l1") * coefficients.l1_norm();
    loss.backward();
  }
  NamedTensors out{{"logits", logits.detach()}};
  for (const auto& [name, tensor] : coefficients.named()) {
    DSEE_CHECK(tensor.grad().defined(), "no gradient reached '{}'", name);
    out.push_back({name + ".grad", tensor.grad()});
  }
  request.write_out(out);
  const PrunePlan plan = earlybert_plan(*model, coefficients, request.get<std::int64_t>("heads_per_layer", 0),
                                        request.get<std::int64_t>("neurons_per_layer", 0));
  nlohmann::json heads = nlohmann::json::object(), neurons = nlohmann::json::object();
  for (const auto& [layer, ids] : plan.heads) heads[std::to_string(layer)] = ids;
  for (const auto& [layer, ids] : plan.neurons) neurons[std::to_string(layer)] = ids;
  return {{"heads", heads}, {"neurons", neurons}};
}

}  // namespace dsee::parity
