// dsee omega: compute Ω (docs/method.md, 'The index set Ω') for every adapted
// matrix of a Hugging Face model folder and write it to an Ω file
// (core/sparsity/omega_file.h), once, before training. GreBsmo's reference
// variant takes minutes per matrix, so the command reports each finished matrix
// on stderr with an estimate of the time left; --stability then measures how
// much of Ω survives one ulp of noise on W (core/sparsity/omega.h,
// omega_stability) and prints it as a table on stdout.
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>

#include "base/error.h"
#include "base/log.h"
#include "core/model/pretrained_model.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "core/tuning/adapted.h"
#include "launch/commands.h"

namespace dsee {
namespace {

void print_stability(const std::vector<OmegaStability>& kept) {
  std::size_t width = std::string("total").size();
  for (const auto& item : kept) width = std::max(width, item.name.size());
  std::int64_t c = 0, survived = 0;
  fmt::print("{:<{}}  {:>6}  {:>6}\n", "matrix", width, "c", "kept");
  for (const auto& item : kept) {
    fmt::print("{:<{}}  {:>6}  {:>6}\n", item.name, width, item.c, item.kept);
    c += item.c;
    survived += item.kept;
  }
  fmt::print("{:<{}}  {:>6}  {:>6}  ({:.1f}% of Ω kept under one ulp of noise on W)\n", "total", width, c, survived,
             c > 0 ? 100.0 * double(survived) / double(c) : 100.0);
}

}  // namespace

Command omega_command(CLI::App& app) {
  struct Options {
    std::string model, out, method = "grebsmo", variant = "reference";
    std::vector<std::string> target_modules;
    std::int64_t c = 16, max_rank = 0;
    std::uint64_t seed = 0;
    int workers = 1, threads = 1, outer = 0;
    bool stability = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("omega", "Compute Ω (GreBsmo's sparse support) of a model's adapted matrices");
  sub->add_option("--model", options->model, "Model folder (config.json + model.safetensors)")->required();
  sub->add_option("--out", options->out, "Ω file to write (HDF5, one int64 dataset per matrix)")->required();
  sub->add_option("--c", options->c, "Ω entries per matrix")->capture_default_str();
  sub->add_option("--seed", options->seed, "Seed of the Ω generator")->capture_default_str();
  sub->add_option("--method", options->method, "grebsmo, magnitude or random")->capture_default_str();
  sub->add_option("--variant", options->variant,
                  "GreBsmo variant: reference (the spec's 100 outer steps) or tolerance (rank cap, early stop)")
      ->capture_default_str();
  sub->add_option("--target-modules", options->target_modules,
                  "HF module-name patterns, comma-separated (default query,value; GPT-2 c_attn:q,c_attn:v)")
      ->delimiter(',');
  sub->add_option("--workers", options->workers, "Matrices computed side by side (does not change Ω)")
      ->capture_default_str();
  sub->add_option("--threads", options->threads, "Intra-op threads per worker (Ω depends on it)")
      ->capture_default_str();
  sub->add_option("--max-rank", options->max_rank,
                  "GreBsmo rank cap (0: the variant's default, min(m, n) for reference, 32 for tolerance)")
      ->capture_default_str();
  sub->add_option("--outer", options->outer, "GreBsmo outer steps (0: the variant's, 100)")->capture_default_str();
  sub->add_flag("--stability", options->stability,
                "Also print per matrix how many of the c entries survive one ulp of noise on W (runs Ω twice)");
  return {
      sub, [options] {
        const std::filesystem::path model_dir = options->model;
        DSEE_CHECK(std::filesystem::is_directory(model_dir),
                   "--model {}: no such folder (expected a Hugging Face model folder with config.json and "
                   "model.safetensors)",
                   options->model);
        const std::filesystem::path out = options->out;
        const std::filesystem::path out_dir = out.has_parent_path() ? out.parent_path() : ".";
        DSEE_CHECK(std::filesystem::is_directory(out_dir), "--out {}: the folder {} does not exist; create it first",
                   options->out, out_dir.string());
        DSEE_CHECK(options->c >= 0, "--c {}: Ω size must be >= 0", options->c);
        DSEE_CHECK(options->workers >= 1, "--workers {}: must be >= 1", options->workers);
        DSEE_CHECK(options->threads >= 1, "--threads {}: must be >= 1", options->threads);
        DSEE_CHECK(options->max_rank >= 0, "--max-rank {}: must be >= 0 (0: the variant's default)", options->max_rank);
        DSEE_CHECK(options->outer >= 0, "--outer {}: must be >= 0 (0: the variant's default)", options->outer);

        OmegaOptions omega;
        omega.method = omega_method_from_name(options->method);
        const GrebsmoVariant variant = grebsmo_variant_from_name(options->variant);
        omega.grebsmo = grebsmo_default_options(variant);
        if (options->max_rank > 0) omega.grebsmo.max_rank = options->max_rank;
        if (options->outer > 0) omega.grebsmo.outer = options->outer;
        omega.c = options->c;
        omega.seed = options->seed;
        omega.workers = options->workers;
        omega.threads = options->threads;
        at::set_num_threads(options->threads);

        auto model = model_load(model_dir);
        const auto patterns =
            options->target_modules.empty() ? default_target_modules(model->config().family) : options->target_modules;
        std::vector<NamedMatrix> matrices;
        for (const AdaptedMatrix& matrix : adapted_matrices(*model, patterns))
          matrices.push_back({matrix.name, matrix.weight().contiguous()});

        const bool grebsmo = omega.method == OmegaMethod::grebsmo;
        const std::string how = grebsmo ? fmt::format("grebsmo ({} variant)", grebsmo_variant_name(variant))
                                        : std::string(omega_method_name(omega.method));
        spdlog::info("omega: {} on {} matrices of {} (targets {}), c = {}, seed {}, {} worker(s) × {} thread(s){}", how,
                     matrices.size(), options->model, fmt::join(patterns, ","), omega.c, omega.seed, omega.workers,
                     omega.threads,
                     grebsmo && variant == GrebsmoVariant::reference
                         ? "; the reference variant takes seconds to minutes per 768×768 matrix (100 outer steps, rank "
                           "up to 496)"
                         : "");
        omega.on_matrix = omega_progress_log("", matrices.size());
        const std::vector<OmegaEntry> entries = omega_select(matrices, omega);
        omega_write(out, entries,
                    {omega_method_name(omega.method), grebsmo_variant_name(variant), omega.seed, omega.c});
        spdlog::info("omega: wrote {} datasets to {}", entries.size(), options->out);

        if (options->stability) {
          spdlog::info("omega: stability: Ω again with every entry of W moved one ulp up or down");
          omega.on_matrix = omega_progress_log(" stability", matrices.size());
          print_stability(omega_stability(matrices, omega, entries));
        }
        return 0;
      }};
}

}  // namespace dsee
