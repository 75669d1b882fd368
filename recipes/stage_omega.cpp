// The omega stage (tuning.method = dsee): Ω of every adapted matrix →
// omega.h5. Rank 0 computes Ω, or with omega.split_across_ranks every rank
// computes its share of the matrices and the rows are gathered; rank 0
// writes omega.h5, and every rank takes Ω from that file (checked by
// fingerprint), whether it was computed now or by an earlier run. With
// tuning.init_from the source run's omega.h5 is copied instead
// (init_from.h). With omega.method = gradient every rank takes part in the
// gradients (omega_gradient.h) and rank 0 writes their top c.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/sparsity/omega_file.h"
#include "core/tuning/adapted.h"
#include "data/distributed_sampler.h"
#include "distributed/coordinator.h"
#include "recipes/init_from.h"
#include "recipes/omega_gradient.h"
#include "recipes/stages.h"

namespace dsee {
namespace {

std::vector<AdaptedMatrix> matrices_of(Run& run) {
  const auto& modules = run.recipe.tuning.target_modules;
  return adapted_matrices(*run.model, modules.empty() ? default_target_modules(run.model->config().family) : modules);
}

// Ω of `matrices` with the matrices split across the ranks: rank r computes
// its contiguous shard_range of them (OmegaOptions::first, count) and every
// rank receives all entries, in the input's order — the same entries one
// process computes. One process: omega_select.
std::vector<OmegaEntry> omega_select_across_ranks(const Ranks& ranks, const std::vector<NamedMatrix>& matrices,
                                                  OmegaOptions options) {
  if (ranks.comm == nullptr || ranks.world_size == 1) return omega_select(matrices, options);
  auto& comm = *ranks.comm;
  const auto [begin, end] = shard_range(static_cast<std::int64_t>(matrices.size()), ranks.rank, ranks.world_size);
  options.first = static_cast<std::size_t>(begin);
  options.count = static_cast<std::size_t>(end - begin);
  if (ranks.root())
    spdlog::info("Ω: {} matrices split across {} ranks ({} on rank 0)", matrices.size(), ranks.world_size, end - begin);
  const std::vector<OmegaEntry> mine = omega_select(matrices, options);
  // One row per matrix: rows, cols, sparse_nonzeros, then the c indices.
  at::Tensor packed = at::empty({static_cast<std::int64_t>(mine.size()), 3 + options.c}, at::kLong);
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const auto row = packed[static_cast<std::int64_t>(i)];
    row[0] = mine[i].rows;
    row[1] = mine[i].cols;
    row[2] = mine[i].sparse_nonzeros;
    row.narrow(0, 3, options.c).copy_(mine[i].indices.to(at::kCPU));
  }
  const at::Tensor all = all_gather_rows(comm, packed.to(comm.device())).cpu();
  DSEE_ASSERT(all.size(0) == static_cast<std::int64_t>(matrices.size()), "Ω across ranks: {} entries for {} matrices",
              all.size(0), matrices.size());
  std::vector<OmegaEntry> out(matrices.size());
  for (std::size_t i = 0; i < matrices.size(); ++i) {
    const auto row = all[static_cast<std::int64_t>(i)];
    out[i].name = matrices[i].name;
    out[i].rows = row[0].item<std::int64_t>();
    out[i].cols = row[1].item<std::int64_t>();
    out[i].sparse_nonzeros = row[2].item<std::int64_t>();
    out[i].indices = row.narrow(0, 3, options.c).clone();
  }
  return out;
}

std::vector<OmegaExpected> omega_expected(Run& run) {
  std::vector<OmegaExpected> expected;
  for (const auto& m : matrices_of(run)) expected.push_back({m.name, m.rows, m.cols()});
  return expected;
}

// The file's record of how Ω was made; for method gradient "variant" holds
// its settings, so omega.h5 tells apart Ω of other settings.
OmegaFileInfo omega_info_of(const Recipe& recipe) {
  const OmegaOptions o = recipe_omega_options(recipe);
  const std::string variant = o.method == OmegaMethod::gradient
                                  ? fmt::format("gradient_steps={},gradient_warmup_steps={}",
                                                recipe.omega.gradient_steps, recipe.omega.gradient_warmup_steps)
                                  : std::string(grebsmo_variant_name(o.grebsmo.variant));
  return {omega_method_name(o.method), variant, o.seed, o.c};
}

// Ω from the task's gradients: every rank computes the scores (a collective),
// rank 0 writes their top c.
void omega_from_gradients(Run& run) {
  const auto matrices = matrices_of(run);
  const auto scores = omega_gradient_scores(run, matrices);
  root_writes(run.ranks, "writing omega.h5", [&] {
    std::vector<OmegaEntry> omega;
    for (std::size_t i = 0; i < matrices.size(); ++i) {
      OmegaEntry entry;
      entry.name = matrices[i].name;
      entry.rows = matrices[i].rows;
      entry.cols = matrices[i].cols();
      try {
        entry.indices = omega_top_c(scores[i], run.recipe.omega.c);
      } catch (const Error& e) {
        throw Error(fmt::format("Ω of '{}' ({}×{}): {}", entry.name, entry.rows, entry.cols, e.what()));
      }
      omega.push_back(std::move(entry));
    }
    omega_write(run.dir.omega(), omega, run.omega_info);
  });
}

}  // namespace

void omega_load(Run& run) {
  const auto expected = omega_expected(run);
  read_on_every_rank(run.ranks, run.dir.omega(), "reading omega.h5",
                     [&] { run.omega = omega_read(run.dir.omega(), expected); });
}

void stage_omega(Run& run) {
  if (run.recipe.tuning.method != TuningMethod::dsee) return;
  run.omega_info = omega_info_of(run.recipe);
  if (stage_finished(run, Stage::omega)) return omega_load(run);
  stage_required(run, Stage::omega);
  const auto start = StageClock::now();
  if (!run.recipe.tuning.init_from.empty()) {
    // The S values of tuning.init_from sit on its Ω (its omega.* keys equal ours).
    const auto source = RunDir(init_source_check(run).dir).omega();
    root_writes(run.ranks, "copying Ω of tuning.init_from",
                [&] { omega_write(run.dir.omega(), omega_read(source, omega_expected(run)), run.omega_info); });
    omega_load(run);
    return stage_record(run, Stage::omega,
                        {{"matrices", run.omega.size()}, {"from", source.string()}, {"seconds", seconds_since(start)}});
  }
  if (run.recipe.omega.method == OmegaMethod::gradient) {
    omega_from_gradients(run);
    omega_load(run);
    return stage_record(run, Stage::omega,
                        {{"matrices", run.omega.size()},
                         {"gradient_steps", run.recipe.omega.gradient_steps},
                         {"gradient_warmup_steps", run.recipe.omega.gradient_warmup_steps},
                         {"seconds", seconds_since(start)}});
  }
  std::vector<NamedMatrix> matrices;
  for (const auto& m : matrices_of(run)) matrices.push_back({m.name, m.weight()});
  auto options = recipe_omega_options(run.recipe);
  // Every rank computes its share of the matrices, or rank 0 all of them.
  const bool split = run.recipe.omega.split_across_ranks;
  const auto& ranks = run.ranks;
  const auto count = static_cast<std::int64_t>(matrices.size());
  const auto share =
      split ? shard_range(count, ranks.rank, ranks.world_size) : std::pair<std::int64_t, std::int64_t>{0, count};
  options.on_matrix = omega_progress_log("", static_cast<std::size_t>(share.second - share.first));
  std::vector<OmegaEntry> omega;
  if (split) omega = omega_select_across_ranks(ranks, matrices, options);
  root_writes(ranks, split ? "writing omega.h5" : "computing Ω", [&] {
    if (!split) omega = omega_select(matrices, options);
    omega_write(run.dir.omega(), omega, run.omega_info);
  });
  omega_load(run);  // every rank takes Ω from the file, as a later run will
  stage_record(run, Stage::omega, {{"matrices", run.omega.size()}, {"seconds", seconds_since(start)}});
}

}  // namespace dsee
