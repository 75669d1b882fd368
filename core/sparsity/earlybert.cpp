// EarlyBERT's coefficients, their scaling of the model and the pruning plan
// drawn from them; see earlybert.h.
#include "core/sparsity/earlybert.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "core/model/pretrained_model.h"

namespace dsee {
namespace {

// The projection whose input columns are the heads' context outputs.
std::string attention_output_module(const PretrainedModel& model, std::int64_t layer) {
  return model.config().family == ModelFamily::gpt2 ? fmt::format("h.{}.attn.c_proj", layer)
                                                    : fmt::format("encoder.layer.{}.attention.output.dense", layer);
}

// The original ids of the `count` smallest |c| (stable ascending sort: the
// lower position, so the lower original id, first among equals), ascending.
std::vector<std::int64_t> lowest_ids(const at::Tensor& coefficients, const std::vector<std::int64_t>& ids,
                                     std::int64_t count, std::int64_t layer, const char* what) {
  DSEE_CHECK(count < std::int64_t(ids.size()),
             "EarlyBERT: cannot remove {} {} from layer {}: it has {} (at least one must stay)", count, what, layer,
             ids.size());
  const auto scores = coefficients.detach().abs().to(at::kCPU, at::kDouble);
  DSEE_CHECK(!scores.isnan().any().item<bool>(),
             "EarlyBERT: the {} coefficients of layer {} hold NaN (the search diverged)", what, layer);
  const auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  std::vector<std::int64_t> removed;
  for (std::int64_t i = 0; i < count; ++i) removed.push_back(ids[std::size_t(order[i].item<std::int64_t>())]);
  std::sort(removed.begin(), removed.end());
  return removed;
}

}  // namespace

NamedTensors EarlyBertCoefficients::named() const {
  NamedTensors out;
  for (std::size_t i = 0; i < heads.size(); ++i) out.push_back({fmt::format("earlybert.heads.{}", i), heads[i]});
  for (std::size_t i = 0; i < neurons.size(); ++i) out.push_back({fmt::format("earlybert.neurons.{}", i), neurons[i]});
  return out;
}

at::Tensor EarlyBertCoefficients::l1_norm() const {
  at::Tensor total;
  for (const auto& [name, c] : named()) total = total.defined() ? total + c.abs().sum() : c.abs().sum();
  return total.defined() ? total : at::zeros({});
}

EarlyBertCoefficients earlybert_coefficients(PretrainedModel& model, bool heads, bool neurons) {
  const auto& config = model.config();
  const auto options = at::TensorOptions().dtype(at::kFloat).device(model.device());
  EarlyBertCoefficients out;
  for (std::int64_t layer = 0; layer < config.num_layers; ++layer) {
    if (heads) out.heads.push_back(at::ones({std::int64_t(config.kept_heads(layer).size())}, options).requires_grad_());
    if (neurons)
      out.neurons.push_back(at::ones({std::int64_t(model.kept_neurons(layer).size())}, options).requires_grad_());
  }
  return out;
}

EarlyBertScaling::EarlyBertScaling(PretrainedModel& model, const EarlyBertCoefficients& coefficients)
    : model_(model), coefficients_(coefficients) {
  for (std::size_t layer = 0; layer < coefficients.heads.size(); ++layer)
    modules_.push_back(attention_output_module(model, std::int64_t(layer)));
  for (std::size_t layer = 0; layer < coefficients.neurons.size(); ++layer)
    modules_.push_back(model.feed_forward_modules(std::int64_t(layer)).second);
  for (const auto& module : modules_)
    DSEE_CHECK(!model.linear(module).mask.defined(),
               "EarlyBERT: {} already has a mask (an unstructured pruning plan); the search scales projections "
               "through their masks, so it starts from an unmasked model",
               module);
  apply();
}

void EarlyBertScaling::apply() {
  const auto head_dim = model_.config().head_dim();
  const auto named = coefficients_.named();
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    Linear& linear = model_.linear(modules_[i]);
    const bool heads = i < coefficients_.heads.size();
    const auto columns = heads ? named[i].tensor.repeat_interleave(head_dim) : named[i].tensor;
    DSEE_ASSERT(columns.size(0) == linear.in_features(), "EarlyBERT: {} coefficients for the {} columns of {}",
                columns.size(0), linear.in_features(), modules_[i]);
    linear.mask = columns.to(linear.weight.scalar_type()).unsqueeze(0).expand({linear.out_features(), -1});
  }
}

EarlyBertScaling::~EarlyBertScaling() {
  for (const auto& module : modules_) model_.linear(module).mask = at::Tensor();
}

PrunePlan earlybert_plan(PretrainedModel& model, const EarlyBertCoefficients& coefficients,
                         std::int64_t heads_per_layer, std::int64_t neurons_per_layer) {
  const auto& config = model.config();
  DSEE_CHECK(heads_per_layer >= 0 && neurons_per_layer >= 0,
             "EarlyBERT: heads and neurons to remove per layer must be >= 0, got {} and {}", heads_per_layer,
             neurons_per_layer);
  DSEE_CHECK(heads_per_layer == 0 || std::int64_t(coefficients.heads.size()) == config.num_layers,
             "EarlyBERT: {} heads per layer to remove, but the search had no head coefficients", heads_per_layer);
  DSEE_CHECK(neurons_per_layer == 0 || std::int64_t(coefficients.neurons.size()) == config.num_layers,
             "EarlyBERT: {} neurons per layer to remove, but the search had no neuron coefficients", neurons_per_layer);
  PrunePlan plan;
  for (std::int64_t layer = 0; layer < config.num_layers; ++layer) {
    if (heads_per_layer > 0)
      plan.heads[layer] =
          lowest_ids(coefficients.heads[std::size_t(layer)], config.kept_heads(layer), heads_per_layer, layer, "heads");
    if (neurons_per_layer > 0)
      plan.neurons[layer] = lowest_ids(coefficients.neurons[std::size_t(layer)], model.kept_neurons(layer),
                                       neurons_per_layer, layer, "feed-forward neurons");
  }
  return plan;
}

}  // namespace dsee
