// bench_forward MODEL_DIR BATCH SEQ ITERS THREADS [DEVICE [DTYPE]]: dsee's
// side of bench/forward. Loads the model (fp32 or bf16, CPU or CUDA), runs
// one warm-up forward and ITERS timed forwards on random token ids [BATCH,
// SEQ] without padding, and prints one JSON line: {"tokens_per_s": ...,
// "seconds_per_forward": ...}. On CUDA the clock stops after reading one value
// of the last output back, which waits for every queued kernel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "base/error.h"
#include "core/model/device.h"
#include "core/model/pretrained_model.h"

int main(int argc, char** argv) {
  if (argc < 6 || argc > 8) {
    std::fprintf(stderr, "usage: bench_forward MODEL_DIR BATCH SEQ ITERS THREADS [cpu|cuda [fp32|bf16]]\n");
    return 2;
  }
  try {
    const std::int64_t batch = std::stoll(argv[2]), seq = std::stoll(argv[3]), iters = std::stoll(argv[4]);
    at::set_num_threads(std::stoi(argv[5]));
    dsee::ModelLoadOptions options;
    options.device = dsee::device_choose(argc > 6 ? argv[6] : "cpu");
    options.dtype = argc > 7 && std::string(argv[7]) == "bf16" ? at::kBFloat16 : at::kFloat;
    auto model = dsee::model_load(argv[1], options);
    at::manual_seed(0);
    dsee::ModelInput input;
    input.input_ids = at::randint(0, model->config().vocab_size, {batch, seq}, at::kLong).to(options.device);
    c10::InferenceMode inference;
    const auto wait = [](const dsee::ModelOutput& out) { (void)out.last_hidden_state.flatten()[0].item<float>(); };
    wait(model->forward(input));  // warm-up: allocator, kernels, cuBLAS handles
    const auto start = std::chrono::steady_clock::now();
    dsee::ModelOutput out;
    for (std::int64_t i = 0; i < iters; ++i) out = model->forward(input);
    wait(out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    std::printf("{\"tokens_per_s\": %.3f, \"seconds_per_forward\": %.6f}\n", double(batch * seq) / seconds, seconds);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "bench_forward: %s\n", e.what());
    return 1;
  }
  return 0;
}
