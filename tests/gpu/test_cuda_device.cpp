// On a GPU machine: dsee picks CUDA by default and a matmul there equals the
// CPU result. Elsewhere: exits 77, which ctest reports as skipped.
#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstdio>

#include "core/model/device.h"

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device on this machine\n");
    return 77;
  }
  const c10::Device device = dsee::device_choose("auto");
  if (!device.is_cuda()) {
    std::printf("FAILED: device_choose(auto) gave %s with CUDA available\n", device.str().c_str());
    return 1;
  }
  at::manual_seed(0);
  const at::Tensor a = at::randn({64, 96}, at::kDouble), b = at::randn({96, 32}, at::kDouble);
  const at::Tensor on_gpu = at::matmul(a.to(device), b.to(device)).cpu();
  const bool ok = at::allclose(on_gpu, at::matmul(a, b), 1e-12, 1e-12);
  std::printf("%s: float64 matmul on %s equals the CPU\n", ok ? "passed" : "FAILED", device.str().c_str());
  return ok ? 0 : 1;
}
