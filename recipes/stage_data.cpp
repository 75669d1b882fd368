// The data stage: the task's data (the demo's generated model, teacher and
// labels, or a GLUE task's encoded TSV files: task_data.h) and the pretrained
// model on the arm's device; with several ranks, the start-up checks that
// every rank runs the same recipe, libraries, model and data. It has no
// record: the demo's folder is complete or made again (demo_prepare), and a
// GLUE task is read on every run.
#include <fmt/format.h>

#include "base/env_vars.h"
#include "base/shape_text.h"
#include "base/versions.h"
#include "core/model/device.h"
#include "core/train/checkpoint.h"
#include "distributed/fingerprint.h"
#include "distributed/nccl_info.h"
#include "recipes/stages.h"
#include "recipes/test_hooks.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

// One line per library whose version changes results, compared across ranks.
std::string library_versions_text(const Ranks& ranks) {
  const BuildInfo info = build_info();
  const NcclInfo nccl = nccl_info();
  std::string text = fmt::format("dsee {}\ntorch {}\ncuda {}\nnccl {}\nhdf5 {}\nmpi {}\n", info.dsee_version,
                                 info.torch_version, info.cuda_runtime.empty() ? "none" : info.cuda_runtime,
                                 nccl.enabled ? nccl.loaded : "none", info.hdf5_loaded, ranks.mpi_library);
  if (test_hooks().perturbs(ranks.rank, "versions"))
    text += fmt::format("perturbed by {}\n", env_vars::test_perturb_rank);
  return text;
}

// Start-up check that every rank loaded the same model and data.
void model_and_data_verify(Run& run) {
  auto& comm = *run.ranks.comm;
  std::string shapes;
  for (const auto& slot : run.model->tensor_slots())
    shapes += fmt::format("{} {} {}\n", slot.name, shape_text(slot.tensor->sizes()),
                          c10::toString(slot.tensor->scalar_type()));
  fingerprint_verify_text(comm, "model's tensor shapes", shapes);
  fingerprint_verify(comm, fmt::format("pretrained weights ({})", run.model_path.string()), run.model_hash());
  fingerprint_verify(comm, "training and dev data", fingerprint([&] {
                       NamedTensors tensors;
                       for (const auto& [name, tensor] : run.data.train.tensors)
                         tensors.emplace_back("train." + name, tensor);
                       for (const auto& split : run.data.dev)
                         for (const auto& [name, tensor] : split.tensors)
                           tensors.emplace_back(split.name + "." + name, tensor);
                       return tensors;
                     }()));
}

// The pretrained model of `model_path`, on run.device in run.precision.
std::unique_ptr<PretrainedModel> model_load_from(const Run& run, const fs::path& model_path) {
  ModelLoadOptions load;
  load.task = run.data.causal_lm ? ModelTask::automatic : ModelTask::sequence_classification;
  load.dtype = model_dtype_of_precision(precision_name(run.recipe.run.precision));
  load.device = run.device;
  if (run.recipe.task.name != "demo") {  // a new head of the task's size, seeded by the run
    load.num_labels = run.data.num_labels;
    load.head_seed = static_cast<std::uint64_t>(run.recipe.run.seed);
  }
  return model_load(model_path, load);
}

// The pretrained model, loaded onto run.device in run.precision.
void model_load_into(Run& run, const fs::path& model_path) {
  run.model = model_load_from(run, model_path);
  DSEE_CHECK(!run.data.causal_lm || run.model->config().family == ModelFamily::gpt2,
             "task.name = {} trains a GPT-2 language model, but model.path '{}' holds a {} model; give a GPT-2 folder "
             "(e.g. gpt2-medium)",
             run.recipe.task.name, model_path.string(), model_family_name(run.model->config().family));
  run.model_path = model_path;
}

}  // namespace

std::unique_ptr<PretrainedModel> pretrained_model_load(const Run& run) { return model_load_from(run, run.model_path); }

void ranks_verify_recipe(const Recipe& recipe, const Ranks& ranks) {
  if (ranks.comm == nullptr) return;
  // As flat "section.key = value" lines, so a mismatch quotes the full key.
  std::string flat;
  for (const auto& [key, value] : recipe_lines(recipe.resolved)) flat += key + " = " + value + "\n";
  fingerprint_verify_text(*ranks.comm, "resolved config", flat);
  fingerprint_verify_text(*ranks.comm, "library versions", library_versions_text(ranks));
}

// Note [The pipeline on CUDA]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// run.device picks where an arm computes (core/model/device.h: auto is CUDA
// when a GPU is usable; rank r takes GPU local_rank % count). The model is
// loaded onto that device (frozen weights in bf16 with run.precision = bf16),
// so the tuning's A, B, S values and the head are created there, Ω is
// computed there by rank 0, and AdamW's moments live there. The task's data
// stays on the CPU: task_loss copies each micro-batch to the model's device,
// and evaluation copies each batch there and its logits back. Everything
// written (safetensors, checkpoints, masks, predictions, the export) is
// copied to the CPU by the writer. `dsee run` builds the communicator for the
// same device (NCCL for CUDA under dist.backend = auto), and run_device
// checks the two agree. Checkpoints carry the CUDA generators' states and a
// resume restores them; a CUDA run is deterministic only up to the kernels'
// reduction order (index_add's atomics in S's backward, cuBLAS algorithms),
// so bit-for-bit resume is a CPU guarantee, on CUDA it holds to round-off.

c10::Device run_device(const Recipe& recipe, const Ranks& ranks) {
  const char* request = device_request_name(recipe.run.device);
  const c10::Device device = device_choose(request, ranks.local_rank, "run.device");
  if (ranks.comm != nullptr)
    DSEE_CHECK(ranks.comm->device().type() == device.type(),
               "run.device = {} computes on {}, but the communicator ({}) was built for {}; dsee run builds both from "
               "run.device",
               request, device.str(), ranks.comm->backend(), ranks.comm->device().str());
  return device;
}

void stage_data(Run& run, const DemoOptions& demo) {
  // rank 0 writes the demo's data, the others read it back
  root_writes(run.ranks, "preparing the task data",
              [&] { run.data = task_data_prepare(run.recipe, demo, run.dir.data()); });
  if (!run.ranks.root()) run.data = task_data_prepare(run.recipe, demo, run.dir.data());
  model_load_into(run, run.recipe.model.path.empty() ? run.data.pretrained_dir : fs::path(run.recipe.model.path));
  if (run.ranks.comm != nullptr) model_and_data_verify(run);
}

}  // namespace dsee
