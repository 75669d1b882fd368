// bench_omega: dsee's side of bench/grebsmo: Ω selection on matrices handed
// over from Python (bench/omega_io.py), timed, with the knobs a benchmark
// turns (variant, workers, threads, device, float64, stability). `dsee omega
// --model DIR` is the user command on model folders.
//
// Input: a JSON file {"data": "weights.bin", "matrices": [{"name", "rows",
// "cols", "offset"}]}; the data file holds each matrix as row-major
// little-endian float32 at `offset` bytes. Output: the Ω file (HDF5, via
// omega_write) and a JSON report {"seconds", "matrices": [{"name",
// "sparse_nonzeros", "kept"?}]}.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "base/error.h"
#include "core/model/device.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/omega_file.h"

namespace {

std::vector<dsee::NamedMatrix> read_matrices(const std::filesystem::path& manifest_path) {
  std::ifstream manifest_file(manifest_path);
  DSEE_CHECK(manifest_file, "cannot open '{}'", manifest_path.string());
  const nlohmann::json manifest = nlohmann::json::parse(manifest_file);
  const std::filesystem::path data_path = manifest_path.parent_path() / manifest.at("data").get<std::string>();
  std::ifstream data(data_path, std::ios::binary);
  DSEE_CHECK(data, "cannot open '{}'", data_path.string());
  std::vector<dsee::NamedMatrix> matrices;
  for (const auto& item : manifest.at("matrices")) {
    const auto rows = item.at("rows").get<std::int64_t>(), cols = item.at("cols").get<std::int64_t>();
    at::Tensor weight = at::empty({rows, cols}, at::kFloat);
    data.seekg(item.at("offset").get<std::int64_t>());
    data.read(reinterpret_cast<char*>(weight.data_ptr<float>()), rows * cols * 4);
    DSEE_CHECK(data, "'{}' is too short for matrix '{}'", data_path.string(), item.at("name").get<std::string>());
    matrices.push_back({item.at("name").get<std::string>(), weight});
  }
  return matrices;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_omega: dsee's Ω selection on raw float32 matrices (bench/grebsmo)"};
  std::string manifest, out, report, method = "grebsmo", variant = "reference";
  dsee::OmegaOptions options;
  int outer = 0, inner = 0;
  std::int64_t max_rank = -1;
  double tol = -1;
  bool stability = false, fp64 = false;
  std::string device = "cpu";
  app.add_option("--input", manifest, "manifest JSON")->required();
  app.add_option("--out", out, "Ω file to write (HDF5)");
  app.add_option("--report", report, "JSON report to write");
  app.add_option("--method", method, "grebsmo, magnitude or random");
  app.add_option("--variant", variant, "reference or tolerance");
  app.add_option("--c", options.c, "indices per matrix");
  app.add_option("--seed", options.seed, "Ω generator seed");
  app.add_option("--workers", options.workers, "matrices computed concurrently");
  app.add_option("--threads", options.threads, "intra-op threads per worker");
  app.add_option("--outer", outer, "outer steps (default: the variant's)");
  app.add_option("--inner", inner, "inner steps (default: the variant's)");
  app.add_option("--max-rank", max_rank, "rank cap (0 or absent: the variant's default)");
  app.add_option("--tol", tol, "tolerance variant: relative change of the residual that stops it");
  app.add_option("--device", device, "cpu or cuda: the device GreBsmo runs on (matrices are moved there)");
  app.add_flag("--fp64", fp64, "run GreBsmo in float64");
  app.add_flag("--stability", stability, "also count Ω entries that survive one ulp of noise on W");
  CLI11_PARSE(app, argc, argv);

  try {
    options.method = dsee::omega_method_from_name(method);
    options.grebsmo = dsee::grebsmo_default_options(dsee::grebsmo_variant_from_name(variant));
    if (outer > 0) options.grebsmo.outer = outer;
    if (inner > 0) options.grebsmo.inner = inner;
    if (max_rank >= 0) options.grebsmo.max_rank = max_rank;
    if (tol >= 0) options.grebsmo.tol = tol;
    if (fp64) options.grebsmo.dtype = at::kDouble;
    at::set_num_threads(options.threads);
    std::vector<dsee::NamedMatrix> matrices = read_matrices(manifest);
    if (device != "cpu") {
      const c10::Device target = dsee::device_choose(device);
      for (auto& m : matrices) m.weight = m.weight.to(target);
    }

    const auto start = std::chrono::steady_clock::now();
    const std::vector<dsee::OmegaEntry> entries = dsee::omega_select(matrices, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!out.empty()) dsee::omega_write(out, entries, {method, variant, options.seed, options.c});

    nlohmann::json result = {{"seconds", seconds}, {"matrices", nlohmann::json::array()}};
    std::vector<dsee::OmegaStability> kept;
    if (stability) kept = dsee::omega_stability(matrices, options, entries);
    for (std::size_t i = 0; i < entries.size(); ++i) {
      nlohmann::json item = {{"name", entries[i].name}, {"sparse_nonzeros", entries[i].sparse_nonzeros}};
      if (stability) item["kept"] = kept[i].kept;
      result["matrices"].push_back(item);
    }
    if (!report.empty()) std::ofstream(report) << result.dump(2) << "\n";
    std::printf("%s\n", result.dump().c_str());
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "bench_omega: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
