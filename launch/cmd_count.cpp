// dsee count: the numbers of docs/method.md ('Counting parameters and FLOPs')
// for a model folder and a tuning configuration — parameters (total and
// non-zero, as deployed), trainable parameters of dsee / lora / full / bitfit /
// top_k / adapter, inference
// FLOPs (dense and non-zero) at one sequence length. The definitions are in
// core/tuning/counting.h.
//
// With --recipe the model folder (model.path) and, where the recipe schema
// has them, the tuning keys (tuning.method, tuning.rank, tuning.top_layers,
// tuning.adapter_size, tuning.prefix_length, tuning.prefix_projection, tuning.prefix_hidden,
// tuning.target_modules, omega.c) come from the recipe; a flag given on the
// command line wins.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

#include "base/config.h"
#include "base/error.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/counting.h"
#include "launch/commands.h"
#include "recipes/recipe_schema.h"

namespace dsee {
namespace {

// 591746 → "591,746".
std::string grouped(std::int64_t n) {
  auto digits = std::to_string(n < 0 ? -n : n);
  for (auto i = std::int64_t(digits.size()) - 3; i > 0; i -= 3) digits.insert(std::size_t(i), ",");
  return n < 0 ? "-" + digits : digits;
}

std::string percent(std::int64_t part, std::int64_t whole) {
  return whole == 0 ? "-" : fmt::format("{:.2f}%", 100.0 * double(part) / double(whole));
}

}  // namespace

Command count_command(CLI::App& app) {
  struct Options {
    std::string model, recipe, method = "dsee";
    std::int64_t seq_len = 128, rank = 16, c = 16, top_layers = 2, adapter_size = 64, prefix_length = 10,
                 prefix_hidden = 512;
    bool prefix_projection = false;
    std::vector<std::string> targets;
    bool per_linear = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("count", "Count parameters (total, non-zero, trainable) and inference FLOPs");
  sub->add_option("--model", options->model, "Model folder (config.json + model.safetensors)");
  sub->add_option("--recipe", options->recipe, "Recipe (TOML): model.path and tuning keys when the schema has them");
  sub->add_option("--seq-len", options->seq_len, "Sequence length L of the FLOP count")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--method", options->method, "Tuning method whose trainable parameters are counted")
      ->check(CLI::IsMember({"dsee", "lora", "full", "bitfit", "top_k", "adapter", "prefix"}))
      ->capture_default_str();
  sub->add_option("--rank", options->rank, "r of the low-rank update")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--top-layers", options->top_layers, "Layers counted from the top that train (top_k)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--adapter-size", options->adapter_size, "Bottleneck m of each adapter (adapter)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--prefix-length", options->prefix_length, "Prefix positions L per layer (prefix)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_flag("--prefix-projection", options->prefix_projection,
                "Prefixes through the reparameterisation MLP while training (prefix)");
  sub->add_option("--prefix-hidden", options->prefix_hidden, "Hidden width of the prefix MLP (prefix)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--c", options->c, "Non-zeros of S per adapted matrix (dsee)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--target-modules", options->targets, "Adapted projections (default: query, value / c_attn:q, :v)");
  sub->add_flag("--per-linear", options->per_linear, "Also print every projection's shape, non-zeros and FLOPs");
  return {sub, [options, sub] {
            if (!options->recipe.empty()) {
              const Config recipe = Config::load(recipe_schema(), options->recipe);
              const auto& schema = recipe_schema();
              const auto given = [&](const char* flag) { return sub->count(flag) > 0; };
              if (options->model.empty()) options->model = recipe.get_string("model.path");
              if (!given("--method") && schema.find("tuning.method"))
                options->method = recipe.get_string("tuning.method");
              if (!given("--rank") && schema.find("tuning.rank")) options->rank = recipe.get_int("tuning.rank");
              if (!given("--c") && schema.find("omega.c")) options->c = recipe.get_int("omega.c");
              if (!given("--top-layers") && schema.find("tuning.top_layers"))
                options->top_layers = recipe.get_int("tuning.top_layers");
              if (!given("--adapter-size") && schema.find("tuning.adapter_size"))
                options->adapter_size = recipe.get_int("tuning.adapter_size");
              if (!given("--prefix-length") && schema.find("tuning.prefix_length"))
                options->prefix_length = recipe.get_int("tuning.prefix_length");
              if (!given("--prefix-projection") && schema.find("tuning.prefix_projection"))
                options->prefix_projection = recipe.get_bool("tuning.prefix_projection");
              if (!given("--prefix-hidden") && schema.find("tuning.prefix_hidden"))
                options->prefix_hidden = recipe.get_int("tuning.prefix_hidden");
              if (!given("--target-modules") && schema.find("tuning.target_modules"))
                options->targets = recipe.get_strings("tuning.target_modules");
            }
            DSEE_CHECK(!options->model.empty(), "dsee count: give --model DIR (or a --recipe with model.path)");
            auto model = model_load(options->model);
            const auto& config = model->config();

            TuningOptions tuning;
            tuning.method = tuning_method_from_name(options->method);
            tuning.rank = options->rank;
            tuning.top_layers = options->top_layers;
            tuning.adapter_size = options->adapter_size;
            tuning.prefix_length = options->prefix_length;
            tuning.prefix_projection = options->prefix_projection;
            tuning.prefix_hidden = options->prefix_hidden;
            tuning.target_modules = options->targets;
            const auto c = tuning.method == TuningMethod::dsee ? options->c : 0;
            const auto trainable = trainable_parameter_count(*model, tuning, c);
            // Adapters and prefixes are part of the deployed model: attached,
            // they count in the parameters and FLOPs (counting.h model_count).
            std::shared_ptr<ModelTuning> adapters;
            if (tuning.method == TuningMethod::adapter || tuning.method == TuningMethod::prefix)
              adapters = tuning_attach(*model, tuning);
            const auto count = model_count(*model, options->seq_len);

            std::string method = options->method;
            if (tuning_method_has_update(tuning.method)) method += fmt::format(" r={}", tuning.rank);
            if (tuning.method == TuningMethod::top_k) method += fmt::format(" k={}", tuning.top_layers);
            if (tuning.method == TuningMethod::adapter) method += fmt::format(" m={}", tuning.adapter_size);
            if (tuning.method == TuningMethod::prefix)
              method += tuning.prefix_projection
                            ? fmt::format(" L={} projection h={}", tuning.prefix_length, tuning.prefix_hidden)
                            : fmt::format(" L={}", tuning.prefix_length);
            if (tuning.method == TuningMethod::dsee) method += fmt::format(" c={}", c);
            const auto L = options->seq_len;
            fmt::print("model                {} ({}, {} layers, heads per layer {})\n", options->model,
                       model_family_name(config.family), config.num_layers, fmt::join(count.heads_per_layer, " "));
            fmt::print("parameters total     {}\n", grouped(count.parameters));
            fmt::print("parameters non-zero  {} ({})\n", grouped(count.nonzero_parameters),
                       percent(count.nonzero_parameters, count.parameters));
            fmt::print("trainable            {} ({} of total; {})\n", grouped(trainable),
                       percent(trainable, count.parameters), method);
            fmt::print("FLOPs dense          {} (L={}; attention {})\n", grouped(count.flops_dense), L,
                       grouped(count.attention_flops));
            fmt::print("FLOPs non-zero       {} (L={}; {} of dense)\n", grouped(count.flops_nonzero), L,
                       percent(count.flops_nonzero, count.flops_dense));
            if (options->per_linear)
              for (const auto& row : count.linears)
                fmt::print("  {:<45} [{}, {}] x{} tokens  non-zero {}  FLOPs {}\n", row.module, row.out, row.in,
                           row.tokens, grouped(row.nonzero), grouped(2 * row.out * row.in * row.tokens));
            return 0;
          }};
}

}  // namespace dsee
