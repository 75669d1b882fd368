// Ω selection: draws in model order on one thread, then the per-matrix work
// (GreBsmo, scores, top-c) on `workers` threads. See omega.h for the contract.
//
// Note [Ω and worker threads]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Results must not depend on the number of workers. Two things could make
// them: the random stream and the intra-op thread count. The stream is fixed
// by drawing every matrix's randomness up front in the caller's order; the
// thread count by having each worker set at::set_num_threads(threads) itself
// (OpenMP's thread count is per calling thread, so a new std::thread would
// otherwise start with the machine's default). A matrix computed on worker 2
// with 1 thread is then the same computation as on worker 1 with 1 thread.
#include "core/sparsity/omega.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>

#include "base/enum_names.h"
#include "base/error.h"
#include "base/log.h"

namespace dsee {

namespace {
constexpr EnumName<OmegaMethod> kMethods[] = {{OmegaMethod::grebsmo, "grebsmo"},
                                              {OmegaMethod::magnitude, "magnitude"},
                                              {OmegaMethod::random, "random"},
                                              {OmegaMethod::gradient, "gradient"}};
}  // namespace

OmegaMethod omega_method_from_name(const std::string& name) {
  if (const auto method = enum_from_name(kMethods, name)) return *method;
  throw Error(fmt::format("unknown Ω method '{}': use 'grebsmo', 'magnitude', 'random' or 'gradient'", name));
}

const char* omega_method_name(OmegaMethod method) { return enum_name(kMethods, method); }

at::Tensor omega_top_c(const at::Tensor& scores, std::int64_t c) {
  const at::Tensor flat = scores.detach().reshape(-1).to(at::kCPU);
  DSEE_CHECK(c >= 0 && c <= flat.numel(), "Ω size c = {} is outside [0, {}] (the matrix has {} entries)", c,
             flat.numel(), flat.numel());
  DSEE_CHECK(!at::isnan(flat).any().item<bool>(), "Ω scores contain NaN");
  if (c == 0) return at::empty({0}, at::kLong);
  // A stable descending sort keeps equal scores in index order: ties go to the lower flat index.
  const at::Tensor order = std::get<1>(at::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  return std::get<0>(at::sort(order.narrow(0, 0, c))).contiguous();
}

namespace {

// What one matrix needs from the generator, drawn in model order.
struct OmegaTask {
  const NamedMatrix* matrix = nullptr;
  at::Tensor draw;  // grebsmo: V0 [1, n]; random: [m, n]; magnitude: undefined
};

OmegaEntry omega_of(const OmegaTask& task, const OmegaOptions& options) {
  const NamedMatrix& matrix = *task.matrix;
  OmegaEntry entry;
  entry.name = matrix.name;
  entry.rows = matrix.weight.size(0);
  entry.cols = matrix.weight.size(1);
  at::Tensor scores;
  switch (options.method) {
    case OmegaMethod::grebsmo: {
      const GrebsmoResult result = grebsmo(matrix.weight, task.draw, options.grebsmo, matrix.name);
      entry.sparse_nonzeros = result.sparse.count_nonzero().item<std::int64_t>();
      scores = result.sparse.abs();
      break;
    }
    case OmegaMethod::magnitude:
      scores = matrix.weight.abs();
      break;
    case OmegaMethod::random:
      scores = task.draw.abs();
      break;
    case OmegaMethod::gradient:  // refused by omega_select
      break;
  }
  try {
    entry.indices = omega_top_c(scores, options.c);
  } catch (const Error& e) {
    throw Error(fmt::format("Ω of '{}' ({}×{}): {}", matrix.name, entry.rows, entry.cols, e.what()));
  }
  return entry;
}

}  // namespace

std::vector<OmegaEntry> omega_select(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options) {
  DSEE_CHECK(options.workers >= 1, "Ω workers must be >= 1 (got {})", options.workers);
  DSEE_CHECK(options.threads >= 1, "Ω threads per worker must be >= 1 (got {})", options.threads);
  DSEE_CHECK(options.c >= 0, "Ω size c must be >= 0 (got {})", options.c);
  DSEE_CHECK(options.method != OmegaMethod::gradient,
             "Ω method 'gradient' needs the task's training data: the pipeline's omega stage computes it (dsee run "
             "with omega.method = gradient), not Ω from the weights alone");

  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  generator.set_current_seed(options.seed);
  std::vector<OmegaTask> tasks;
  tasks.reserve(matrices.size());
  for (const NamedMatrix& matrix : matrices) {
    DSEE_CHECK(matrix.weight.defined() && matrix.weight.dim() == 2,
               "Ω of '{}': expected a 2-D out×in weight, got {} dimensions", matrix.name,
               matrix.weight.defined() ? matrix.weight.dim() : 0);
    OmegaTask task{&matrix, {}};
    if (options.method == OmegaMethod::grebsmo)
      task.draw = grebsmo_initial_v(matrix.weight.size(1), generator, options.grebsmo.dtype);
    else if (options.method == OmegaMethod::random)
      task.draw = at::randn(matrix.weight.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
    tasks.push_back(std::move(task));
  }

  // Only [first, first + count) are computed; every draw above was made.
  const std::size_t first = std::min(options.first, tasks.size());
  tasks.erase(tasks.begin(), tasks.begin() + static_cast<std::ptrdiff_t>(first));
  if (options.count < tasks.size()) tasks.resize(options.count);

  // Workers take matrices in order from a shared counter (Note [Ω and worker threads]).
  std::vector<OmegaEntry> entries(tasks.size());
  std::vector<std::exception_ptr> errors(tasks.size());
  std::atomic<std::size_t> next{0};
  std::mutex report;
  auto work = [&] {
    at::set_num_threads(options.threads);
    for (std::size_t i = next++; i < tasks.size(); i = next++) {
      try {
        const auto start = std::chrono::steady_clock::now();
        entries[i] = omega_of(tasks[i], options);
        if (options.on_matrix) {
          const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          const std::lock_guard<std::mutex> lock(report);
          options.on_matrix(first + i, entries[i], seconds);
        }
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const std::size_t worker_count = std::min<std::size_t>(options.workers, std::max<std::size_t>(tasks.size(), 1));
  std::vector<std::thread> workers;
  for (std::size_t w = 0; w < worker_count; ++w) workers.emplace_back(work);
  for (std::thread& worker : workers) worker.join();
  for (const std::exception_ptr& error : errors)
    if (error) std::rethrow_exception(error);
  return entries;
}

namespace {

std::string duration_text(double seconds) {
  if (seconds < 90) return fmt::format("{:.0f} s", seconds);
  if (seconds < 5400) return fmt::format("{:.1f} min", seconds / 60);
  return fmt::format("{:.1f} h", seconds / 3600);
}

}  // namespace

std::function<void(std::size_t, const OmegaEntry&, double)> omega_progress_log(const std::string& label,
                                                                               std::size_t total) {
  const auto start = std::chrono::steady_clock::now();
  auto done = std::make_shared<std::size_t>(0);
  return [label, total, start, done](std::size_t, const OmegaEntry& entry, double seconds) {
    ++*done;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double left = elapsed / double(*done) * double(total - *done);
    const std::string nonzeros =
        entry.sparse_nonzeros >= 0 ? fmt::format(", S non-zeros {}", entry.sparse_nonzeros) : std::string();
    spdlog::info("omega{}: [{}/{}] {} ({}×{}): {:.2f} s{}; {}", label, *done, total, entry.name, entry.rows, entry.cols,
                 seconds, nonzeros,
                 *done == total ? fmt::format("done in {}", duration_text(elapsed))
                                : fmt::format("about {} left", duration_text(left)));
  };
}

std::vector<OmegaStability> omega_stability(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options,
                                            std::uint64_t noise_seed) {
  return omega_stability(matrices, options, omega_select(matrices, options), noise_seed);
}

std::vector<OmegaStability> omega_stability(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options,
                                            const std::vector<OmegaEntry>& base, std::uint64_t noise_seed) {
  DSEE_CHECK(base.size() == matrices.size(), "Ω stability: {} base entries for {} matrices", base.size(),
             matrices.size());
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(noise_seed);
  generator.set_current_seed(noise_seed);
  const at::ScalarType dtype = options.grebsmo.dtype;
  std::vector<NamedMatrix> perturbed;
  perturbed.reserve(matrices.size());
  for (const NamedMatrix& matrix : matrices) {
    const at::Tensor w = matrix.weight.to(dtype);
    const at::Tensor up = at::bernoulli(at::full(w.sizes(), 0.5, at::TensorOptions().dtype(at::kDouble)), generator)
                              .to(at::kBool)
                              .to(w.device());
    const at::Tensor infinity = at::full({}, std::numeric_limits<double>::infinity(), w.options());
    perturbed.push_back({matrix.name, at::nextafter(w, at::where(up, infinity, -infinity))});
  }
  const std::vector<OmegaEntry> moved = omega_select(perturbed, options);
  std::vector<OmegaStability> out;
  for (std::size_t i = 0; i < base.size(); ++i) {
    const auto* a = base[i].indices.data_ptr<std::int64_t>();
    const auto* b = moved[i].indices.data_ptr<std::int64_t>();
    const std::int64_t c = base[i].indices.numel();
    std::vector<std::int64_t> common;
    std::set_intersection(a, a + c, b, b + c, std::back_inserter(common));
    out.push_back({base[i].name, c, static_cast<std::int64_t>(common.size())});
  }
  return out;
}

}  // namespace dsee
