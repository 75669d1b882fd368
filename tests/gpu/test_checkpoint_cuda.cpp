// On a GPU machine: a checkpoint of CUDA tensors and the CUDA generator
// states. Trainable tensors living on cuda:0 (fp32, bf16) come back on the
// CPU bit-exact; restoring the checkpoint's CUDA generator state makes the
// next CUDA draws repeat exactly. Elsewhere: exits 77 (skipped in ctest).
#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "core/train/checkpoint.h"

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("SKIPPED: no CUDA device on this machine\n");
    return 77;
  }
  const std::string dir = "/tmp/dsee-checkpoint-cuda-" + std::to_string(::getpid());
  at::manual_seed(5);  // seeds the CPU and every CUDA generator
  dsee::CheckpointState state;
  state.step = 3;
  state.trainable = {{"lora_A", at::randn({4, 24}, at::kCUDA)},
                     {"classifier.weight", at::randn({2, 24}, at::kCUDA).to(at::kBFloat16)}};
  state.config_text = "[train]\nlr = 0.1\n";
  dsee::checkpoint_capture_rng(state);
  const at::Tensor expected = at::randn({16}, at::kCUDA).cpu();
  dsee::checkpoint_write(dir, state, 1);

  at::manual_seed(99);
  const dsee::CheckpointState read = dsee::checkpoint_read(dir + "/step-3.h5");
  int failures = 0;
  if (read.rng_cuda.size() != static_cast<std::size_t>(torch::cuda::device_count())) {
    std::printf("FAIL: %zu CUDA generator states for %d devices\n", read.rng_cuda.size(),
                static_cast<int>(torch::cuda::device_count()));
    ++failures;
  }
  dsee::checkpoint_restore_rng(read);
  if (!at::equal(at::randn({16}, at::kCUDA).cpu(), expected)) {
    std::printf("FAIL: CUDA draws after restoring the checkpoint differ\n");
    ++failures;
  }
  for (std::size_t i = 0; i < state.trainable.size(); ++i) {
    const at::Tensor want = state.trainable[i].tensor.cpu().contiguous(), got = read.trainable[i].tensor;
    if (got.scalar_type() != want.scalar_type() || got.sizes() != want.sizes() ||
        std::memcmp(got.data_ptr(), want.data_ptr(), want.nbytes()) != 0) {
      std::printf("FAIL: %s is not bit-exact\n", state.trainable[i].name.c_str());
      ++failures;
    }
  }
  ::unlink((dir + "/step-3.h5").c_str());
  ::unlink((dir + "/step-3.h5.sum").c_str());
  ::unlink((dir + "/latest").c_str());
  ::rmdir(dir.c_str());
  std::printf(failures ? "%d failure(s)\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
