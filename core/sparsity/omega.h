// Ω, the fixed index set of DSEE's sparse update S (docs/method.md, 'The index
// set Ω'): exactly `c` flat indices per adapted matrix, row-major in the out×in
// orientation, ascending.
//
// Methods: grebsmo (largest |S| of GreBsmo on the pretrained W), magnitude
// (largest |W|), random (largest |randn(m, n)|, i.e. uniform positions). Ties
// go to the lower flat index, so exactly c come back even when S has fewer
// than c non-zeros (zeros rank last); c = 0 gives an empty Ω.
//
// RNG: one CPU generator seeded with `seed` before the first draw; matrices
// are visited in the order given (the caller passes the model's order: layer
// by layer, query before value; GPT-2's c_attn thirds as separate matrices
// named "…c_attn.weight:q" / ":v"). grebsmo draws randn(1, n) per matrix,
// random draws randn(m, n), magnitude draws nothing. All draws happen first,
// in that order, so running matrices on several worker threads changes the
// time, never the result (given the same intra-op thread count per matrix).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/sparsity/grebsmo.h"

namespace dsee {

// gradient: RoSA's accumulated squared gradients on the task; it needs the
// task's data, so only the pipeline's omega stage computes it
// (recipes/omega_gradient.h); omega_select refuses it.
enum class OmegaMethod { grebsmo, magnitude, random, gradient };

// "grebsmo" / "magnitude" / "random" / "gradient"; throws dsee::Error naming the accepted names.
OmegaMethod omega_method_from_name(const std::string& name);
const char* omega_method_name(OmegaMethod method);

struct OmegaEntry;

struct OmegaOptions {
  OmegaMethod method = OmegaMethod::grebsmo;
  std::int64_t c = 16;     // indices per matrix
  std::uint64_t seed = 0;  // seeds the Ω generator
  GrebsmoOptions grebsmo;  // variant and its settings (method grebsmo)
  int workers = 1;         // matrices computed concurrently
  int threads = 1;         // ATen intra-op threads per worker; results depend on it
  // Optional progress report, called once per finished matrix with its
  // position in the input, its entry and the seconds it took; calls come from
  // the worker threads but never two at once. Does not change the result.
  std::function<void(std::size_t index, const OmegaEntry& entry, double seconds)> on_matrix;
  // Compute only matrices [first, first + count) of the input and return
  // their entries (the pipeline splits the matrices across ranks this way).
  // The draws are still made for every matrix, so each entry equals the one a
  // call over all matrices returns. Default: all of them.
  std::size_t first = 0;
  std::size_t count = static_cast<std::size_t>(-1);
};

struct NamedMatrix {
  std::string name;   // HF parameter name (GPT-2 c_attn thirds: "…c_attn.weight:q")
  at::Tensor weight;  // [out, in]
};

struct OmegaEntry {
  std::string name;
  std::int64_t rows = 0, cols = 0;    // the out×in shape the indices refer to
  at::Tensor indices;                 // int64 [c], ascending, in [0, rows·cols)
  std::int64_t sparse_nonzeros = -1;  // grebsmo: non-zeros of S; other methods: -1
};

// The c flat indices of the largest `scores` (any shape, read row-major),
// ties to the lower index, returned ascending as int64 [c] on the CPU.
// Throws dsee::Error when c < 0, c > numel or a score is NaN.
at::Tensor omega_top_c(const at::Tensor& scores, std::int64_t c);

// Ω of every matrix, in the given order.
std::vector<OmegaEntry> omega_select(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options);

// An OmegaOptions::on_matrix that logs each finished matrix (spdlog info):
// "omega<label>: [3/24] name (768×768): 91.2 s, S non-zeros 120345; about 31 min left",
// the estimate from the wall-clock time per finished matrix so far (so it
// accounts for workers running side by side). `total`: matrices this call computes.
std::function<void(std::size_t, const OmegaEntry&, double)> omega_progress_log(const std::string& label,
                                                                               std::size_t total);

struct OmegaStability {
  std::string name;
  std::int64_t c = 0;
  std::int64_t kept = 0;  // |Ω(W) ∩ Ω(W + one ulp of noise)|
};

// Rounding-level stability (dsee omega --stability): Ω of each W and of W with
// every entry moved one ulp (in the GreBsmo dtype) up or down at random
// (signs from a generator seeded with `noise_seed`), same seed and options
// otherwise; how many of the c indices survive.
std::vector<OmegaStability> omega_stability(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options,
                                            std::uint64_t noise_seed = 1);

// The same, given `base` = omega_select(matrices, options) already computed
// (dsee omega writes it and then checks it): only the perturbed Ω is computed.
std::vector<OmegaStability> omega_stability(const std::vector<NamedMatrix>& matrices, const OmegaOptions& options,
                                            const std::vector<OmegaEntry>& base, std::uint64_t noise_seed = 1);

}  // namespace dsee
