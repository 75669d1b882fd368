// GreBsmo: the greedy bilateral robust-PCA split W ≈ Q·V + S of one weight
// matrix (Zhou & Tao 2013), whose sparse part S gives DSEE its index set Ω.
// docs/method.md ('GreBsmo') fixes the loop; see Note [GreBsmo variants] in
// grebsmo.cpp for the two variants and why they differ.
//
//   reference  the method's loop exactly: `outer` = 100 outer steps, each
//              resetting S and running `inner` = 2 alternating steps, hard
//              threshold |S| < tau = 0.01 → 0, rank + `rank_step` = 5 rows of
//              R of QR(E) per outer step (capped at min(m, n)). No early stop.
//   tolerance  the same iteration with a rank cap (`max_rank`, default 32)
//              and an early stop once the rank is at the cap and the
//              sub-threshold residual ‖E‖_F changes by at most `tol`
//              (relative) between outer steps; new rows of V come from a QR
//              of E's first `rank_step` columns (cheap, equal in exact
//              arithmetic, not bitwise).
//
// Shapes: W [m, n] out×in, V0 [1, n] (the one draw the method takes from the
// Ω generator, see grebsmo_initial_v). Runs on W's device (CPU or CUDA) in
// `dtype` (fp32 default, fp64 option); S comes back on that device in dtype.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace dsee {

enum class GrebsmoVariant { reference, tolerance };

// "reference" / "tolerance"; throws dsee::Error naming the accepted names.
GrebsmoVariant grebsmo_variant_from_name(const std::string& name);
const char* grebsmo_variant_name(GrebsmoVariant variant);

struct GrebsmoOptions {
  GrebsmoVariant variant = GrebsmoVariant::reference;
  int outer = 100;                    // outer steps (reference: exactly; tolerance: at most)
  int inner = 2;                      // alternating steps per outer step
  double tau = 0.01;                  // hard threshold on |S| (absolute)
  int rank_step = 5;                  // rows added to V per outer step
  std::int64_t max_rank = 0;          // cap on rows(V), at most min(m, n); 0: reference min(m, n), tolerance 32
  double tol = 1e-3;                  // tolerance variant: relative change of ‖E‖_F that stops it
  at::ScalarType dtype = at::kFloat;  // kFloat or kDouble
};

// The defaults of a variant: reference as docs/method.md; tolerance with
// max_rank 32 (through max_rank = 0), tol = 1e-3, at most 100 outer steps.
GrebsmoOptions grebsmo_default_options(GrebsmoVariant variant);

struct GrebsmoResult {
  at::Tensor sparse;      // S [m, n], from the last inner step
  std::int64_t rank = 0;  // rows(V) in the last outer step
  int outer_steps = 0;    // outer steps run
  double residual = 0.0;  // ‖E‖_F / ‖W‖_F after the last outer step
};

// V0 = randn(1, n) drawn from `generator` on the CPU in `dtype`: exactly one
// draw of n normals (docs/method.md, 'Random draws').
at::Tensor grebsmo_initial_v(std::int64_t n, at::Generator& generator, at::ScalarType dtype = at::kFloat);

// Runs GreBsmo on `weight` [m, n] from `initial_v` [1, n]; `name` appears in
// errors (non-2-D, empty or non-finite weight, wrong V0 shape).
GrebsmoResult grebsmo(const at::Tensor& weight, const at::Tensor& initial_v, const GrebsmoOptions& options,
                      const std::string& name = "weight");

}  // namespace dsee
