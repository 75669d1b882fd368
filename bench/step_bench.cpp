// bench_step: dsee's side of the training-step section of bench/run
// (bench/step.py). Builds a random BERT-style sequence classifier or GPT-2-
// style causal LM of the given dimensions (seeded; no checkpoint to load),
// attaches DSEE (magnitude Ω: the bench times the step, not GreBsmo) or LoRA
// on the family's default targets (BERT query, value; GPT-2 c_attn:q,
// c_attn:v), optionally in bf16 (run.precision = bf16: frozen weights bf16,
// trainable tensors fp32, docs/precision.md), and takes --warmup untimed then
// --steps timed steps on one random batch, as the plain loop a user writes:
//   forward    model.forward + the loss (cross-entropy on the classes; GPT-2
//              the causal LM loss with labels = ids)
//   backward   loss.backward()
//   optimizer  AdamW step + zero_grad
// Prints one JSON line: the median of each phase over the timed steps (and of
// the whole step), samples/s from the median step, the resident memory after
// start-up (before the model) and its peak (VmHWM), trainable parameters and
// the last loss. One configuration per process, so the peak is this one's.
// --profile FILE writes a Chrome trace of one more step (LibTorch's legacy
// profiler: every op with its time), after the timed ones.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/model/bert.h"
#include "core/model/gpt2.h"
#include "core/model/model_config.h"
#include "core/sparsity/omega.h"
#include "core/train/losses.h"
#include "core/train/optimizer.h"
#include "core/tuning/adapted.h"
#include "core/tuning/tuning.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// A field of /proc/self/status in MiB ("VmRSS", "VmHWM"); -1 where unreadable.
double status_mib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with(field + ":")) return std::stod(line.substr(field.size() + 1)) / 1024.0;  // kB
  return -1;
}

struct Dims {
  std::string model = "bert";
  std::int64_t layers = 2, hidden = 64, heads = 4, intermediate = 0, vocab = 0, seq = 16, batch = 2;
};

nlohmann::json config_json(const Dims& d) {
  if (d.model == "gpt2")
    return {{"model_type", "gpt2"},
            {"vocab_size", d.vocab > 0 ? d.vocab : 50257},
            {"n_embd", d.hidden},
            {"n_layer", d.layers},
            {"n_head", d.heads},
            {"n_inner", d.intermediate > 0 ? d.intermediate : 4 * d.hidden},
            {"n_positions", std::max<std::int64_t>(d.seq, 1024)},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", 1e-5}};
  return {{"model_type", "bert"},
          {"vocab_size", d.vocab > 0 ? d.vocab : 30522},
          {"hidden_size", d.hidden},
          {"num_hidden_layers", d.layers},
          {"num_attention_heads", d.heads},
          {"intermediate_size", d.intermediate > 0 ? d.intermediate : 4 * d.hidden},
          {"max_position_embeddings", std::max<std::int64_t>(d.seq, 512)},
          {"type_vocab_size", 2},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"num_labels", 2},
          {"architectures", {"BertForSequenceClassification"}}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("bench_step: one DSEE / LoRA training step of a random BERT- or GPT-2-style model, timed by phase");
  Dims d;
  std::int64_t steps = 3, warmup = 1, rank_r = 16, c = 16;
  double alpha = 32;
  std::uint64_t seed = 0;
  bool first_token_only = false;
  std::string method = "dsee", dtype_name = "fp32", profile;
  int threads = 1;
  app.add_option("--model", d.model, "bert (sequence classification) or gpt2 (causal LM)")
      ->check(CLI::IsMember({"bert", "gpt2"}));
  app.add_option("--layers", d.layers, "layers");
  app.add_option("--hidden", d.hidden, "hidden size");
  app.add_option("--heads", d.heads, "attention heads");
  app.add_option("--intermediate", d.intermediate, "MLP width (0: 4 x hidden)");
  app.add_option("--vocab", d.vocab, "vocabulary (0: 30522 for bert, 50257 for gpt2)");
  app.add_option("--seq", d.seq, "sequence length");
  app.add_option("--batch", d.batch, "batch size");
  app.add_option("--method", method, "dsee or lora")->check(CLI::IsMember({"dsee", "lora"}));
  app.add_option("--r", rank_r, "rank r");
  app.add_option("--c", c, "Ω size per adapted matrix (dsee)");
  app.add_option("--alpha", alpha, "LoRA alpha (scale alpha / r)");
  app.add_option("--dtype", dtype_name, "fp32 or bf16 (frozen weights; trainable tensors stay fp32)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--threads", threads, "intra-op threads");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--steps", steps, "timed steps (at least 1)")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "weights, A and the batch");
  app.add_option("--profile", profile, "write a Chrome trace of one more step to this file");
  app.add_flag("--first-token-only", first_token_only,
               "bert: the last layer for the first position only (ModelInput::first_token_only; not what dsee run "
               "does)");
  CLI11_PARSE(app, argc, argv);

  try {
    at::set_num_threads(threads);
    const double base_rss = status_mib("VmRSS");
    const bool gpt2 = d.model == "gpt2";
    const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
    const auto config = dsee::model_config_parse(config_json(d), "bench_step/config.json");
    std::unique_ptr<dsee::PretrainedModel> model;
    if (gpt2)
      model = std::make_unique<dsee::Gpt2Model>(config, dtype, at::kCPU);
    else
      model = std::make_unique<dsee::EncoderModel>(config, true, dtype, at::kCPU);
    {  // HF's initialisation: N(0, 0.02²), layer norms 1 and 0, biases 0
      at::NoGradGuard no_grad;
      at::manual_seed(seed);
      for (const auto& slot : model->tensor_slots()) {
        const std::string& name = slot.name;
        const bool norm = name.find("LayerNorm") != std::string::npos || name.find("ln_") != std::string::npos;
        if (name.ends_with(".bias"))
          slot.tensor->zero_();
        else if (norm)
          slot.tensor->fill_(1.0);
        else
          slot.tensor->copy_(at::randn(slot.tensor->sizes()) * 0.02);
      }
    }

    dsee::TuningOptions tuning_options;
    tuning_options.method = dsee::tuning_method_from_name(method);
    tuning_options.rank = rank_r;
    tuning_options.alpha = alpha;
    tuning_options.seed = seed;
    std::vector<dsee::OmegaEntry> omega;
    if (tuning_options.method == dsee::TuningMethod::dsee) {
      std::vector<dsee::NamedMatrix> named;
      for (const auto& m : dsee::adapted_matrices(*model, dsee::default_target_modules(config.family)))
        named.push_back({m.name, m.weight().to(at::kFloat)});
      dsee::OmegaOptions omega_options;
      omega_options.method = dsee::OmegaMethod::magnitude;
      omega_options.c = c;
      omega = dsee::omega_select(named, omega_options);
    }
    auto tuning = dsee::tuning_attach(*model, tuning_options, omega);
    tuning->set_training(true);
    const auto parameters = tuning->trainable_parameters();
    std::int64_t trainable = 0;
    for (const auto& [name, tensor] : parameters) trainable += tensor.numel();
    dsee::AdamW optimizer(parameters, {});

    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
    dsee::ModelInput input;
    input.first_token_only = first_token_only;
    input.input_ids =
        at::randint(0, config.vocab_size, {d.batch, d.seq}, generator, at::TensorOptions().dtype(at::kLong));
    const at::Tensor labels =
        gpt2 ? input.input_ids
             : at::randint(0, config.num_labels, {d.batch}, generator, at::TensorOptions().dtype(at::kLong));

    std::vector<double> forward_ms, backward_ms, optimizer_ms, step_ms;
    double loss_value = 0;
    const auto step = [&](bool timed) {
      const auto t0 = Clock::now();
      const at::Tensor logits = model->forward(input).logits;
      const at::Tensor loss =
          gpt2 ? dsee::causal_lm_loss(logits, labels) : dsee::sequence_classification_loss(logits, labels);
      const auto t1 = Clock::now();
      loss.backward();
      const auto t2 = Clock::now();
      optimizer.step(1e-4);
      optimizer.zero_grad();
      const auto t3 = Clock::now();
      loss_value = loss.item<double>();
      if (!timed) return;
      forward_ms.push_back(ms(t0, t1));
      backward_ms.push_back(ms(t1, t2));
      optimizer_ms.push_back(ms(t2, t3));
      step_ms.push_back(ms(t0, t3));
    };
    for (std::int64_t i = 0; i < warmup + steps; ++i) step(i >= warmup);
    const double peak_rss = status_mib("VmHWM");  // before the profiler's own allocations
    if (!profile.empty()) {
      const torch::autograd::profiler::RecordProfile record(profile);
      step(false);
    }
    const double step_median = median(step_ms);
    const nlohmann::json out = {{"stack", "dsee"},
                                {"model", d.model},
                                {"method", method},
                                {"dtype", dtype_name},
                                {"threads", threads},
                                {"batch", d.batch},
                                {"seq", d.seq},
                                {"steps", steps},
                                {"trainable_parameters", trainable},
                                {"forward_ms", median(forward_ms)},
                                {"backward_ms", median(backward_ms)},
                                {"optimizer_ms", median(optimizer_ms)},
                                {"step_ms", step_median},
                                {"step_ms_all", step_ms},
                                {"samples_per_s", 1000.0 * static_cast<double>(d.batch) / step_median},
                                {"base_rss_mib", base_rss},
                                {"peak_rss_mib", peak_rss},
                                {"loss", loss_value}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
