// Bytes all-reduced per optimizer step under data parallelism: dsee run
// averages the trainable gradients only (distributed/gradient_sync.h: one
// float32 buffer), full-model data parallelism averages every parameter.
// Counted from shapes alone (models on the meta device, core/counting.h),
// with the paper's settings; prints a Markdown table for bench/RESULTS.md.
#include <fmt/format.h>

#include "core/counting.h"
#include "core/model_config.h"
#include "core/pretrained_model.h"
#include "core/tuning.h"

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

}  // namespace

int main() {
  struct Row {
    const char* name;
    ModelConfig config;
    bool classification;
    std::int64_t rank, c;
  };
  const std::vector<Row> rows = {
      {"BERT-base", encoder("bert", 30522, 768, 12, 12, 512, 2, "BertForSequenceClassification"), true, 16, 16},
      {"RoBERTa-large", encoder("roberta", 50265, 1024, 24, 16, 514, 1, "RobertaForSequenceClassification"), true, 16,
       16},
      {"GPT-2 medium", gpt2_medium(), false, 4, 16},
  };
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
    fmt::print("| {} | r={}, c={}, q+v | {} | {} ({} MiB) | {} | {} ({} MiB) | {:.0f}× |\n", row.name, row.rank, row.c,
               dsee_count, 4 * dsee_count, mib(dsee_count), full_count, 4 * full_count, mib(full_count),
               double(full_count) / double(dsee_count));
  }
  return 0;
}
