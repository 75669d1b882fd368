// Bytes all-reduced per optimizer step under data parallelism: dsee run
// averages the trainable gradients only (distributed/gradient_sync.h: one
// float32 buffer), full-model data parallelism averages every parameter.
// Counted from shapes alone (models on the meta device, core/tuning/counting.h),
// with the paper's settings; prints a Markdown table for bench/RESULTS.md.
//
// --measure (under mpirun -n N, N >= 2): the same models built for real on
// the CPU with random weights; for DSEE and for full fine-tuning, one
// training step's backward on a tiny batch, then GradientSync — the code
// `dsee run` uses — averages the gradients, and the communicator's own count
// of the bytes it was given (CollectiveStats) is what the table reports,
// with the number of collectives that step issued. --json prints the counted
// figures as one JSON line per model (bench/scale reads them). Needs about 4 × the
// model's fp32 size of memory per rank for the full rows (RoBERTa-large:
// ~6 GB per rank).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <string>

#include "base/error.h"
#include "core/model/bert.h"
#include "core/model/gpt2.h"
#include "core/model/model_config.h"
#include "core/model/pretrained_model.h"
#include "core/sparsity/omega.h"
#include "core/train/losses.h"
#include "core/tuning/counting.h"
#include "core/tuning/tuning.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"
#include "distributed/gradient_sync.h"

namespace {

using dsee::ModelConfig;

ModelConfig encoder(const char* type, std::int64_t vocab, std::int64_t hidden, std::int64_t layers, std::int64_t heads,
                    std::int64_t positions, std::int64_t type_vocab, const char* architecture) {
  nlohmann::json json = {{"model_type", type},
                         {"vocab_size", vocab},
                         {"hidden_size", hidden},
                         {"num_hidden_layers", layers},
                         {"num_attention_heads", heads},
                         {"intermediate_size", 4 * hidden},
                         {"max_position_embeddings", positions},
                         {"type_vocab_size", type_vocab},
                         {"hidden_act", "gelu"},
                         {"layer_norm_eps", 1e-12},
                         {"num_labels", 2},
                         {"architectures", {architecture}}};
  if (std::string(type) == "roberta") {
    json["pad_token_id"] = 1;
    json["layer_norm_eps"] = 1e-5;
  }
  return dsee::model_config_parse(json, fmt::format("{} (built in)", type));
}

ModelConfig gpt2_medium() {
  return dsee::model_config_parse({{"model_type", "gpt2"},
                                   {"vocab_size", 50257},
                                   {"n_embd", 1024},
                                   {"n_layer", 24},
                                   {"n_head", 16},
                                   {"n_positions", 1024},
                                   {"activation_function", "gelu_new"},
                                   {"layer_norm_epsilon", 1e-5},
                                   {"architectures", {"GPT2LMHeadModel"}}},
                                  "gpt2-medium (built in)");
}

std::string mib(std::int64_t values) { return fmt::format("{:.2f}", 4.0 * double(values) / (1024.0 * 1024.0)); }

struct Row {
  const char* name;
  ModelConfig config;
  bool classification;
  std::int64_t rank, c;
};

struct Measured {
  std::uint64_t bytes = 0, calls = 0;
  std::int64_t trainable = 0;
};

// One optimizer step's gradient sync of `method` on a random `row` model:
// what the communicator was given during GradientSync::average_gradients.
Measured measure(const Row& row, dsee::TuningMethod method, dsee::Communicator& comm) {
  std::unique_ptr<dsee::PretrainedModel> model;
  if (row.config.family == dsee::ModelFamily::gpt2)
    model = std::make_unique<dsee::Gpt2Model>(row.config, at::kFloat, at::kCPU);
  else
    model = std::make_unique<dsee::EncoderModel>(row.config, row.classification, at::kFloat, at::kCPU);
  at::manual_seed(0);
  for (const auto& slot : model->tensor_slots()) {
    at::NoGradGuard no_grad;
    if (slot.tensor->defined()) slot.tensor->normal_(0.0, 0.02);
  }
  dsee::TuningOptions options;
  options.method = method;
  options.rank = row.rank;
  options.alpha = 2.0 * static_cast<double>(row.rank);
  std::vector<dsee::OmegaEntry> omega;
  if (method == dsee::TuningMethod::dsee) {
    // Magnitude Ω: the count depends on c, not on which entries GreBsmo picks.
    std::vector<dsee::NamedMatrix> named;
    for (const auto& m : dsee::adapted_matrices(*model, dsee::default_target_modules(model->config().family)))
      named.push_back({m.name, m.weight()});
    dsee::OmegaOptions omega_options;
    omega_options.method = dsee::OmegaMethod::magnitude;
    omega_options.c = row.c;
    omega = dsee::omega_select(named, omega_options);
  }
  auto tuning = dsee::tuning_attach(*model, options, omega);
  std::vector<at::Tensor> tensors;
  for (const auto& [name, tensor] : tuning->trainable_parameters()) tensors.push_back(tensor);
  dsee::GradientSync sync(comm, tensors);

  at::manual_seed(100 + comm.rank());  // each rank its own micro-batch
  dsee::ModelInput input;
  input.input_ids = at::randint(0, 1000, {1, 8}, at::kLong);
  const auto logits = model->forward(input).logits;
  const at::Tensor loss = row.classification ? dsee::sequence_classification_loss(logits, at::zeros({1}, at::kLong))
                                             : dsee::causal_lm_loss(logits, input.input_ids);
  loss.backward();
  const dsee::CollectiveStats before = comm.stats();
  sync.average_gradients();
  const dsee::CollectiveStats after = comm.stats();
  return {after.bytes - before.bytes, after.calls - before.calls, sync.numel()};
}

}  // namespace

int main(int argc, char** argv) {
  const bool measuring = argc > 1 && std::strcmp(argv[1], "--measure") == 0;
  const bool json = argc > 1 && std::strcmp(argv[1], "--json") == 0;
  if (argc > 2 || (argc > 1 && !measuring && !json)) {
    std::fprintf(stderr, "usage: bench_allreduce_bytes [--measure | --json]   (--measure under mpirun -n N, N >= 2)\n");
    return 2;
  }
  const std::vector<Row> rows = {
      {"BERT-base", encoder("bert", 30522, 768, 12, 12, 512, 2, "BertForSequenceClassification"), true, 16, 16},
      {"RoBERTa-large", encoder("roberta", 50265, 1024, 24, 16, 514, 1, "RobertaForSequenceClassification"), true, 16,
       16},
      {"GPT-2 medium", gpt2_medium(), false, 4, 16},
  };
  if (measuring) {
    try {
      dsee::MpiSession mpi;
      at::set_num_threads(1);
      dsee::CommunicatorOptions comm_options;
      comm_options.backend = "mpi";
      comm_options.device = at::kCPU;
      comm_options.timeout_s = 600;
      auto comm = dsee::make_communicator(comm_options);
      if (comm->world_size() < 2) throw dsee::Error("--measure needs at least 2 ranks: mpirun -n 2 ... --measure");
      if (comm->rank() == 0)
        fmt::print(
            "| model | DSEE settings | ranks | bytes/step DSEE (measured) | collectives | bytes/step full (measured) "
            "| collectives | full ÷ DSEE |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
      for (const auto& row : rows) {
        const Measured dsee_step = measure(row, dsee::TuningMethod::dsee, *comm);
        const Measured full_step = measure(row, dsee::TuningMethod::full, *comm);
        if (comm->rank() == 0)
          fmt::print("| {} | r={}, c={}, q+v | {} | {} ({} trainable) | {} | {} ({} trainable) | {} | {:.0f}× |\n",
                     row.name, row.rank, row.c, comm->world_size(), dsee_step.bytes, dsee_step.trainable,
                     dsee_step.calls, full_step.bytes, full_step.trainable, full_step.calls,
                     double(full_step.bytes) / double(dsee_step.bytes));
        std::fflush(stdout);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_allreduce_bytes: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  if (!json)
    fmt::print(
        "| model | DSEE settings | trainable (DSEE) | bytes/step DSEE | full-model parameters | bytes/step full "
        "| full ÷ DSEE |\n|---|---|---:|---:|---:|---:|---:|\n");
  for (const auto& row : rows) {
    auto model = dsee::model_on_meta(row.config, row.classification);
    dsee::TuningOptions options;
    options.method = dsee::TuningMethod::dsee;
    options.rank = row.rank;
    const auto dsee_count = dsee::trainable_parameter_count(*model, options, row.c);
    options.method = dsee::TuningMethod::full;
    const auto full_count = dsee::trainable_parameter_count(*model, options, 0);
    if (json) {  // one line per model, for bench/scale
      fmt::print("{}\n", nlohmann::json({{"model", row.name},
                                         {"rank", row.rank},
                                         {"c", row.c},
                                         {"trainable_dsee", dsee_count},
                                         {"parameters", full_count}})
                             .dump());
      continue;
    }
    fmt::print("| {} | r={}, c={}, q+v | {} | {} ({} MiB) | {} | {} ({} MiB) | {:.0f}× |\n", row.name, row.rank, row.c,
               dsee_count, 4 * dsee_count, mib(dsee_count), full_count, 4 * full_count, mib(full_count),
               double(full_count) / double(dsee_count));
  }
  return 0;
}
