// dsee run: execute a recipe's stages in its run directory (recipes/pipeline.h),
// as one process or as one rank of an mpirun / srun job.
//
// Every `dsee run` starts MPI (MpiSession: without a launcher it is a
// 1-rank job) and a communicator whose watchdog bounds every collective by
// dist.timeout_s (the wait for rank 0's own work by dist.root_timeout_s),
// and hands both to the pipeline. An error that every rank
// raises at the same point (a fingerprint mismatch, rank 0's failure passed
// on) ends each rank normally with exit 1; any other error on one rank of a
// multi-rank job aborts the whole job (MPI_Abort, exit 1), since its peers
// would otherwise wait in their next collective until the watchdog fires.
#include <mpi.h>

#include <cstdio>

#include "core/model/device.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"
#include "distributed/fingerprint.h"
#include "distributed/ranks.h"
#include "distributed/watchdog.h"
#include "launch/commands.h"
#include "recipes/pipeline.h"
#include "recipes/recipe.h"

namespace dsee {

Command run_command(CLI::App& app) {
  struct Options {
    std::string recipe;
    std::vector<std::string> overrides;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("run", "Run a recipe: Ω, train, prune, re-tune, evaluate, export");
  sub->add_option("recipe", options->recipe, "Recipe file (TOML), e.g. recipes/demo.toml")->required();
  sub->add_option("--set", options->overrides, "Override a key: --set train.lr=3e-4 (repeatable)");
  return {sub, [options] {
            MpiSession session;
            const ProcessPlace& place = session.place();
            try {
              const Recipe recipe = recipe_load(options->recipe, options->overrides);
              CommunicatorOptions comm_options;
              comm_options.backend = backend_request_name(recipe.dist.backend);
              // The communicator lives where the model trains (NCCL for CUDA under dist.backend = auto).
              comm_options.device =
                  device_choose(device_request_name(recipe.run.device), place.local_rank, "run.device");
              comm_options.local_rank = place.local_rank;
              comm_options.timeout_s = recipe.dist.timeout_s;
              const auto watchdog = std::make_shared<Watchdog>(comm_options.timeout_s);
              const auto comm = make_communicator(comm_options, watchdog);
              Ranks ranks;
              ranks.comm = comm.get();
              ranks.rank = place.rank;
              ranks.world_size = place.world_size;
              ranks.local_rank = place.local_rank;
              ranks.mpi_library = session.mpi_library_version();
              ranks.watchdog = watchdog.get();
              ranks.root_timeout_s = recipe.dist.root_timeout_s;
              if (place.world_size > 1)
                spdlog::info("dsee run on {} ranks ({} backend on {}, dist.timeout_s = {}, dist.root_timeout_s = {})",
                             place.world_size, comm->backend(), comm_options.device.str(), comm_options.timeout_s,
                             ranks.root_timeout_s);
              pipeline_run(recipe, ranks);
            } catch (const FingerprintMismatch&) {
              throw;  // every rank saw it
            } catch (const ErrorOnEveryRank&) {
              throw;
            } catch (const Error& e) {
              if (place.world_size == 1) throw;
              std::fprintf(stderr, "dsee: error: rank %d: %s\n", place.rank, e.what());
              std::fflush(stderr);
              MPI_Abort(MPI_COMM_WORLD, 1);
            }
            return 0;
          }};
}

}  // namespace dsee
