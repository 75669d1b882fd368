// The NCCL communicator on one rank (no mpirun needed: MPI singleton): every
// collective runs on CUDA tensors and must give, bit for bit, what the MPI
// communicator gives on CPU copies of the same random tensors (fp32, bf16,
// int64). Exits 77 without a CUDA device. Built only with DSEE_HAVE_NCCL.
#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstdio>
#include <string>

#include "base/log.h"
#include "distributed/bootstrap.h"
#include "distributed/mpi_communicator.h"
#include "distributed/nccl_communicator.h"

namespace {
int failures = 0;
void expect_same(const at::Tensor& nccl, const at::Tensor& mpi, const std::string& what) {
  const bool ok = nccl.device().is_cuda() && nccl.sizes() == mpi.sizes() && at::equal(nccl.cpu(), mpi);
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}
}  // namespace

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("skipped: no CUDA device\n");
    return 77;
  }
  dsee::LogOptions log;
  dsee::log_init(log);
  dsee::MpiSession mpi_session;
  dsee::MpiCommunicator mpi;
  dsee::NcclCommunicator nccl(0);
  if (nccl.world_size() != 1 || nccl.backend() != "nccl" || !nccl.device().is_cuda()) {
    std::printf("FAIL: expected one NCCL rank on a CUDA device\n");
    return 1;
  }
  at::manual_seed(5);
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
    const std::string name = std::string(c10::toString(dtype));
    const at::Tensor base =
        dtype == at::kLong ? at::randint(-1000, 1000, {37, 5}, at::kLong) : at::randn({37, 5}).to(dtype);
    at::Tensor on_gpu = base.cuda(), on_cpu = base.clone();
    nccl.all_reduce_sum(on_gpu);
    mpi.all_reduce_sum(on_cpu);
    expect_same(on_gpu, on_cpu, "all_reduce_sum " + name);
    if (dtype != at::kLong) {
      on_gpu = base.cuda(), on_cpu = base.clone();
      nccl.all_reduce_average(on_gpu);
      mpi.all_reduce_average(on_cpu);
      expect_same(on_gpu, on_cpu, "all_reduce_average " + name);
    }
    on_gpu = base.cuda(), on_cpu = base.clone();
    nccl.broadcast(on_gpu, 0);
    mpi.broadcast(on_cpu, 0);
    expect_same(on_gpu, on_cpu, "broadcast " + name);
    expect_same(nccl.all_gather(base.cuda()), mpi.all_gather(base), "all_gather " + name);
  }
  nccl.barrier();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
