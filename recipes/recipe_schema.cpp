#include "recipes/recipe_schema.h"

namespace dsee {

const ConfigSchema& recipe_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"run.name", std::string("run"), "Name of the run; the run directory is run.out_dir/run.name"});
    s.add({"run.out_dir", std::string("runs"), "Where run directories are created"});
    s.add({"run.seed", std::int64_t{42}, "Seed for model init, dropout and data order", 0.0});
    s.add({"run.device", std::string("auto"), "auto: CUDA when available, else CPU", {}, {}, {"auto", "cpu", "cuda"}});
    s.add({"run.checkpoint_on_signal", true,
           "On SIGTERM/SIGINT/SIGUSR1 (Slurm pre-emption) write a checkpoint before exiting, so a requeued job resumes"});
    s.add({"model.path", std::string(""), "Hugging Face model directory (config.json, model.safetensors)"});
    s.add({"train.lr", 2e-4, "Peak learning rate", 0.0, 1.0});
    s.add({"train.epochs", std::int64_t{5}, "Training epochs", 0.0});
    s.add({"train.batch_size", std::int64_t{32}, "Global batch size (over all ranks)", 1.0});
    s.add({"dist.timeout_s", 600.0, "Seconds a collective may take before the job is aborted", 1.0});
    s.add({"dist.backend", std::string("auto"), "Communicator: auto picks nccl for CUDA, mpi for the CPU", {}, {},
           {"auto", "mpi", "nccl"}});
    s.add({"dist.fingerprint_every", std::int64_t{100},
           "Check every N optimizer steps that all ranks hold the same trainable parameters (0: never)", 0.0});
    return s;
  }();
  return schema;
}

}  // namespace dsee
