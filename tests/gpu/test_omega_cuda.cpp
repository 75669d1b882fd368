// On a GPU machine: GreBsmo and Ω run where the weights live. The tolerance
// variant on a CUDA planted matrix (rank 8 + 16 outliers of ±1) finds the
// outliers, as on the CPU, and Ω comes back as CPU int64. Exact equality
// with the CPU is not expected (different QR and GEMM kernels; the loop is
// sensitive to rounding). Elsewhere: exits 77, which ctest reports as skipped.
// `test_omega_cuda cpu` runs the same check on the CPU (a unit test does, so
// the check itself is known to pass where it can run).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>

#include <cstdio>
#include <set>
#include <string>

#include "core/sparsity/omega.h"

int main(int argc, char** argv) {
  const bool on_cpu = argc > 1 && std::string(argv[1]) == "cpu";
  if (!on_cpu && !torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device on this machine\n");
    return 77;
  }
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor w = at::randn({512, 8}, g).mul(0.2).matmul(at::randn({8, 384}, g).mul(0.2));
  w += at::randn({512, 384}, g) * 1e-3;
  const at::Tensor positions = at::randperm(512 * 384, g).narrow(0, 0, 16);
  std::set<std::int64_t> spikes;
  for (std::int64_t i = 0; i < 16; ++i) {
    const std::int64_t p = positions[i].item<std::int64_t>();
    w.view({-1})[p] = i % 2 ? 1.0 : -1.0;
    spikes.insert(p);
  }
  dsee::OmegaOptions options;
  options.grebsmo = dsee::grebsmo_default_options(dsee::GrebsmoVariant::tolerance);
  options.grebsmo.max_rank = 8;
  const auto entries = dsee::omega_select({{"planted.weight", w.to(on_cpu ? at::kCPU : at::kCUDA)}}, options);
  const at::Tensor omega = entries.at(0).indices;
  int hits = 0;
  for (std::int64_t i = 0; i < omega.numel(); ++i) hits += spikes.count(omega[i].item<std::int64_t>());
  const bool ok = omega.device().is_cpu() && omega.scalar_type() == at::kLong && omega.numel() == 16 && hits >= 15;
  std::printf("%s: tolerance GreBsmo on %s put %d of 16 planted outliers in Ω\n", ok ? "passed" : "FAILED",
              on_cpu ? "the CPU" : "CUDA", hits);
  return ok ? 0 : 1;
}
