// Ω against the Python GreBsmo transcription (test_omega.py,
// bench/grebsmo_reference.py).
//
//   omega  in: the matrices [out, in] by name, taken in the request's "names"
//          order (the Ω generator draws for them in that order); request:
//          method, variant, c, seed, workers, threads, outer (0: the
//          variant's), "omega_file" (the Ω file to write). result:
//          {"seconds", "matrices": [{"name", "sparse_nonzeros"}]}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>

#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"
#include "parity_request.h"

namespace dsee::parity {

nlohmann::json omega(const Request& request) {
  const auto method = request.get<std::string>("method", "grebsmo");
  const auto variant = request.get<std::string>("variant", "reference");
  OmegaOptions options;
  options.method = omega_method_from_name(method);
  options.grebsmo = grebsmo_default_options(grebsmo_variant_from_name(variant));
  if (const auto outer = request.get<int>("outer", 0); outer > 0) options.grebsmo.outer = outer;
  options.c = request.get<std::int64_t>("c", options.c);
  options.seed = request.get<std::uint64_t>("seed", options.seed);
  options.workers = request.get<int>("workers", options.workers);
  options.threads = request.get<int>("threads", options.threads);
  at::set_num_threads(options.threads);
  std::vector<NamedMatrix> matrices;
  for (const auto& name : request.get<std::vector<std::string>>("names"))
    matrices.push_back({name, request.in().tensor(name).clone()});

  const auto start = std::chrono::steady_clock::now();
  const std::vector<OmegaEntry> entries = omega_select(matrices, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  omega_write(request.get<std::string>("omega_file"), entries, {method, variant, options.seed, options.c});
  nlohmann::json result = {{"seconds", seconds}, {"matrices", nlohmann::json::array()}};
  for (const auto& entry : entries)
    result["matrices"].push_back({{"name", entry.name}, {"sparse_nonzeros", entry.sparse_nonzeros}});
  return result;
}

}  // namespace dsee::parity
