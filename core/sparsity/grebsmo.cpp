// GreBsmo on one weight matrix; the loop is docs/method.md's ('GreBsmo'),
// line by line.
//
// Note [GreBsmo variants]
// ~~~~~~~~~~~~~~~~~~~~~~~
// The reference variant is chaotic under rounding: computing the five new rows
// of V in a mathematically equivalent way changes Ω to 2 of 16 shared entries
// on a 768×768 Gaussian matrix (docs/method.md, 'Numerical behaviour'). So the
// reference variant performs the method's operations in the method's order,
// with the same ATen calls a plain Python-torch transcription makes
// (tests/parity holds one to it). Two shortcuts are taken only because they are
// bitwise identical:
//   * R of QR(E) comes from linalg_qr(E, "r"): the same geqrf, without the
//     orgqr that would build the unused Q;
//   * E = W − Q·V − S is read off S before thresholding (W − Q·V is exactly
//     that tensor; x − x = +0 and x − 0 = x in IEEE arithmetic), which saves
//     a matmul and a subtraction per outer step;
//   * the first inner step after the reset reads W instead of W − 0.
// Its cost is dominated by the full QR of the m×n residual each outer step and
// by the rank, which reaches 496 after 100 steps.
//
// The tolerance variant is where speed comes from: the rank stops at
// `max_rank` (after which no QR of E is needed at all), the new rows are
// Q₅ᵀ·E from the QR of E's first rank_step columns (equal to R[0:5, :] in
// exact arithmetic), and the loop stops once the rank is at the cap and
// ‖E‖_F changes by at most `tol` relative to the previous outer step. S is
// still reset every outer step, as in the reference.
#include "core/sparsity/grebsmo.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "base/enum_names.h"
#include "base/error.h"

namespace dsee {

namespace {
constexpr EnumName<GrebsmoVariant> kVariants[] = {{GrebsmoVariant::reference, "reference"},
                                                  {GrebsmoVariant::tolerance, "tolerance"}};
}  // namespace

GrebsmoVariant grebsmo_variant_from_name(const std::string& name) {
  if (const auto variant = enum_from_name(kVariants, name)) return *variant;
  throw Error(fmt::format("unknown GreBsmo variant '{}': use 'reference' or 'tolerance'", name));
}

const char* grebsmo_variant_name(GrebsmoVariant variant) { return enum_name(kVariants, variant); }

GrebsmoOptions grebsmo_default_options(GrebsmoVariant variant) {
  GrebsmoOptions options;
  options.variant = variant;
  return options;
}

at::Tensor grebsmo_initial_v(std::int64_t n, at::Generator& generator, at::ScalarType dtype) {
  return at::randn({1, n}, generator, at::TensorOptions().dtype(dtype).device(at::kCPU));
}

namespace {

// The tolerance variant's rank cap when none is given: enough for the
// low-rank structure of real projection weights to be fitted, small enough
// that each outer step stays cheap (768×32 QRs).
constexpr std::int64_t kToleranceDefaultMaxRank = 32;

void check_options(const GrebsmoOptions& o) {
  DSEE_CHECK(o.outer >= 1 && o.inner >= 1, "GreBsmo needs outer >= 1 and inner >= 1 (got {} and {})", o.outer, o.inner);
  DSEE_CHECK(o.rank_step >= 1, "GreBsmo rank_step must be >= 1 (got {})", o.rank_step);
  DSEE_CHECK(o.max_rank >= 0, "GreBsmo max_rank must be >= 0, 0 meaning the variant's default (got {})", o.max_rank);
  DSEE_CHECK(o.tau >= 0 && std::isfinite(o.tau), "GreBsmo tau must be finite and >= 0 (got {})", o.tau);
  DSEE_CHECK(o.tol >= 0 && std::isfinite(o.tol), "GreBsmo tol must be finite and >= 0 (got {})", o.tol);
  DSEE_CHECK(o.dtype == at::kFloat || o.dtype == at::kDouble, "GreBsmo runs in float32 or float64, not {}",
             c10::toString(o.dtype));
}

// Rows to append to V: R[0:rows, :] of QR(E), computed as each variant says.
at::Tensor new_rows(const at::Tensor& residual, std::int64_t rows, GrebsmoVariant variant) {
  if (variant == GrebsmoVariant::reference) return std::get<1>(at::linalg_qr(residual, "r")).narrow(0, 0, rows);
  const at::Tensor q = std::get<0>(at::linalg_qr(residual.narrow(1, 0, rows), "reduced"));
  return q.t().matmul(residual);
}

}  // namespace

GrebsmoResult grebsmo(const at::Tensor& weight, const at::Tensor& initial_v, const GrebsmoOptions& options,
                      const std::string& name) {
  check_options(options);
  DSEE_CHECK(weight.dim() == 2 && weight.numel() > 0,
             "GreBsmo of '{}': expected a non-empty 2-D weight, got shape [{}]", name, fmt::join(weight.sizes(), ", "));
  const std::int64_t m = weight.size(0), n = weight.size(1);
  DSEE_CHECK(initial_v.dim() == 2 && initial_v.size(0) == 1 && initial_v.size(1) == n,
             "GreBsmo of '{}': initial V must be [1, {}], got [{}]", name, n, fmt::join(initial_v.sizes(), ", "));
  const at::Tensor w = weight.to(options.dtype).contiguous();
  DSEE_CHECK(at::isfinite(w).all().item<bool>(), "GreBsmo of '{}': the weight has NaN or infinite entries", name);

  const bool reference = options.variant == GrebsmoVariant::reference;
  const std::int64_t full_rank = std::min(m, n);
  const std::int64_t requested_cap = options.max_rank != 0 ? options.max_rank
                                     : reference           ? full_rank
                                                           : kToleranceDefaultMaxRank;
  const std::int64_t rank_cap = std::min(requested_cap, full_rank);
  const double weight_norm = w.norm().item<double>();

  at::Tensor v = initial_v.to(w.options());
  at::Tensor s, residual;
  GrebsmoResult result;
  double previous_norm = -1.0;
  for (int outer = 0; outer < options.outer; ++outer) {
    // S ← 0 every outer step; W − 0 is W bit for bit, so the first inner step reads W itself.
    s = at::Tensor();
    at::Tensor below;  // |W − Q·V| < tau of the last inner step
    at::Tensor unthresholded;
    for (int inner = 0; inner < options.inner; ++inner) {
      const at::Tensor x = s.defined() ? w - s : w;
      const at::Tensor q = std::get<0>(at::linalg_qr(x.matmul(v.t()), "reduced"));
      v = q.t().matmul(x);
      unthresholded = w - q.matmul(v);
      below = unthresholded.abs() < options.tau;
      s = unthresholded.masked_fill(below, 0);
    }
    residual = unthresholded.masked_fill(below.logical_not(), 0);  // E = W − Q·V − S, see the Note
    result.outer_steps = outer + 1;

    const std::int64_t room = rank_cap - v.size(0);
    if (!reference) {
      const double norm = residual.norm().item<double>();
      const bool settled = previous_norm >= 0 && std::abs(norm - previous_norm) <= options.tol * previous_norm;
      if (room <= 0 && (settled || norm == 0)) break;
      previous_norm = norm;
    }
    if (room > 0 && outer + 1 < options.outer)
      v = at::cat({v, new_rows(residual, std::min<std::int64_t>(options.rank_step, room), options.variant)}, 0);
  }
  result.sparse = s;
  result.rank = v.size(0);
  result.residual = weight_norm > 0 ? residual.norm().item<double>() / weight_norm : 0.0;
  return result;
}

}  // namespace dsee
