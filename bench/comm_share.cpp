// bench_comm_share: the time share of communication in one data-parallel
// training step, dsee's side of bench/comm_share. Run it under
// mpirun -n N; every rank builds the same random BERT-style model (seeded),
// attaches the tuning method, and takes --steps optimizer steps on its own
// random micro-batch. Per step it times, on every rank:
//   compute   forward + backward of the local micro-batch
//   sync      GradientSync::average_gradients (one all-reduce of the
//             trainable gradients: the only collective of a step)
//   update    AdamW
// then, after a barrier, the same all-reduce once more (sync_collective_s:
// the collective without the wait for the slowest rank's backward),
// and, outside the step, one all-reduce of a buffer as large as the whole
// model: what full-model data parallelism would move each step.
// Rank 0 prints one JSON line with the means over the timed steps (the first
// --warmup steps are not timed) and the maxima over ranks, since the slowest
// rank sets the pace: its `sync` includes the wait for the others.
// --device cuda puts the model, the batch and the buffers on GPU local_rank
// (one rank per GPU) with the NCCL communicator, and synchronises the device
// before each clock reading so every phase is timed to its end; TF32 stays
// off (LibTorch's default for matmuls), so the step is the fp32 step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <chrono>
#include <cstdio>

#include "core/model/bert.h"
#include "core/model/device.h"
#include "core/model/model_config.h"
#include "core/sparsity/omega.h"
#include "core/train/losses.h"
#include "core/train/optimizer.h"
#include "core/tuning/tuning.h"
#include "distributed/bootstrap.h"
#include "distributed/communicator_factory.h"
#include "distributed/gradient_sync.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("bench_comm_share: communication share of a data-parallel DSEE step (run under mpirun)");
  std::int64_t layers = 4, hidden = 256, heads = 4, seq = 64, batch = 8, steps = 20, warmup = 3, rank_r = 8, c = 16;
  std::string method = "dsee", device_name = "cpu", backend = "auto";
  int threads = 1;
  app.add_option("--layers", layers, "encoder layers");
  app.add_option("--hidden", hidden, "hidden size (intermediate = 4x)");
  app.add_option("--heads", heads, "attention heads");
  app.add_option("--seq", seq, "sequence length");
  app.add_option("--batch", batch, "micro-batch per rank");
  app.add_option("--steps", steps, "timed optimizer steps");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--method", method, "dsee, lora or full");
  app.add_option("--r", rank_r, "LoRA rank r");
  app.add_option("--c", c, "Ω size per matrix (dsee)");
  app.add_option("--threads", threads, "intra-op threads per rank");
  app.add_option("--device", device_name, "cpu or cuda (GPU local_rank of the node)");
  app.add_option("--backend", backend, "communicator: auto (mpi on cpu, nccl on cuda), mpi or nccl");
  CLI11_PARSE(app, argc, argv);

  try {
    dsee::MpiSession mpi;
    at::set_num_threads(threads);
    const c10::Device device = dsee::device_choose(device_name, mpi.place().local_rank);
    const bool cuda = device.is_cuda();
    const auto settle = [cuda] {  // the device's queued work is part of the phase that queued it
      if (cuda) torch::cuda::synchronize();
    };
    dsee::CommunicatorOptions comm_options;
    comm_options.backend = backend;
    comm_options.device = device;
    comm_options.local_rank = mpi.place().local_rank;
    comm_options.timeout_s = 300;
    auto comm = dsee::make_communicator(comm_options);

    const nlohmann::json json = {{"model_type", "bert"},
                                 {"vocab_size", 8000},
                                 {"hidden_size", hidden},
                                 {"num_hidden_layers", layers},
                                 {"num_attention_heads", heads},
                                 {"intermediate_size", 4 * hidden},
                                 {"max_position_embeddings", std::max<std::int64_t>(seq, 128)},
                                 {"type_vocab_size", 2},
                                 {"hidden_act", "gelu"},
                                 {"layer_norm_eps", 1e-12},
                                 {"architectures", {"BertForSequenceClassification"}}};
    dsee::EncoderModel model(dsee::model_config_parse(json, "bench/config.json"), true, at::kFloat, device);
    at::manual_seed(0);
    for (const auto& slot : model.tensor_slots()) {
      at::NoGradGuard no_grad;
      const bool norm = slot.name.find("LayerNorm.weight") != std::string::npos;
      slot.tensor->copy_(at::randn(slot.tensor->sizes()) * 0.04 + (norm ? 1.0 : 0.0));
    }
    std::int64_t model_numel = 0;
    for (const auto& slot : model.tensor_slots()) model_numel += slot.tensor->numel();

    dsee::TuningOptions tuning_options;
    tuning_options.method = dsee::tuning_method_from_name(method);
    tuning_options.rank = rank_r;
    tuning_options.alpha = 2.0 * static_cast<double>(rank_r);
    std::vector<dsee::OmegaEntry> omega;
    if (tuning_options.method == dsee::TuningMethod::dsee) {
      // Magnitude Ω: the bench measures the step, not GreBsmo.
      std::vector<dsee::NamedMatrix> named;
      for (const auto& m : dsee::adapted_matrices(model, dsee::default_target_modules(model.config().family)))
        named.push_back({m.name, m.weight()});
      dsee::OmegaOptions omega_options;
      omega_options.method = dsee::OmegaMethod::magnitude;
      omega_options.c = c;
      omega = dsee::omega_select(named, omega_options);
    }
    auto tuning = dsee::tuning_attach(model, tuning_options, omega);
    tuning->set_training(true);
    const auto parameters = tuning->trainable_parameters();
    std::vector<at::Tensor> tensors;
    for (const auto& [name, tensor] : parameters) tensors.push_back(tensor);
    dsee::GradientSync sync(*comm, tensors);
    dsee::AdamW optimizer(parameters, {});

    at::manual_seed(1000 + comm->rank());  // each rank its own batch
    dsee::ModelInput input;
    input.input_ids = at::randint(0, 8000, {batch, seq}, at::kLong).to(device);
    const auto labels = at::randint(0, 2, {batch}, at::kLong).to(device);
    at::Tensor full_buffer = at::zeros({model_numel}, at::TensorOptions().dtype(at::kFloat).device(device));

    double compute = 0, sync_s = 0, update = 0, full = 0, collective = 0;
    for (std::int64_t step = 0; step < warmup + steps; ++step) {
      comm->barrier();  // steps start together, so `sync` measures the collective, not drift
      const auto t0 = Clock::now();
      optimizer.zero_grad();
      dsee::sequence_classification_loss(model.forward(input).logits, labels).backward();
      settle();
      const auto t1 = Clock::now();
      sync.average_gradients();
      settle();
      const auto t2 = Clock::now();
      optimizer.step(1e-4);
      settle();
      const auto t3 = Clock::now();
      // The same all-reduce of this step's gradients once more, after a
      // barrier: the collective alone, without the wait for a slower rank's
      // backward that `sync` includes (bench/scale's validation point). The
      // gradients are equal on every rank by now, so averaging changes nothing.
      comm->barrier();
      const auto t3b = Clock::now();
      sync.average_gradients();
      settle();
      const auto t3c = Clock::now();
      comm->barrier();
      const auto t4 = Clock::now();
      comm->all_reduce_average(full_buffer);
      settle();
      const auto t5 = Clock::now();
      if (step < warmup) continue;
      compute += seconds(t0, t1);
      sync_s += seconds(t1, t2);
      update += seconds(t2, t3);
      collective += seconds(t3b, t3c);
      full += seconds(t4, t5);
    }
    const double n = static_cast<double>(steps);
    at::Tensor means =
        at::tensor({compute / n, sync_s / n, update / n, full / n, collective / n}, at::kDouble).to(device);
    const at::Tensor all = comm->all_gather(means).cpu();  // [world, 5]
    const at::Tensor worst = std::get<0>(all.max(0));
    const at::Tensor mean = all.mean(0);
    if (comm->rank() == 0) {
      const double step_s = worst[0].item<double>() + worst[1].item<double>() + worst[2].item<double>();
      const nlohmann::json out = {
          {"ranks", comm->world_size()},
          {"method", method},
          {"device", device.str()},
          {"backend", comm->backend()},
          {"model_parameters", model_numel},
          {"trainable_parameters", sync.numel()},
          {"bytes_per_step", sync.bytes_per_step()},
          {"full_model_bytes_per_step", model_numel * 4},
          {"compute_s", mean[0].item<double>()},
          {"sync_s", mean[1].item<double>()},
          {"update_s", mean[2].item<double>()},
          {"step_s_slowest_rank", step_s},
          {"sync_share",
           mean[1].item<double>() / (mean[0].item<double>() + mean[1].item<double>() + mean[2].item<double>())},
          {"full_model_allreduce_s", mean[3].item<double>()},
          {"sync_collective_s", mean[4].item<double>()},
          {"full_model_share",
           mean[3].item<double>() / (mean[0].item<double>() + mean[3].item<double>() + mean[2].item<double>())}};
      std::printf("%s\n", out.dump().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm_share: %s\n", e.what());
    return 1;
  }
  return 0;
}
