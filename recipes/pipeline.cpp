// The recipe pipeline: see pipeline.h.
//
// Note [Stages and their records]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A stage is finished when stages/<stage>.json exists; that file holds what
// the stage measured (dev metrics, counts, seconds) and is written last, by
// rename, so a crash never leaves a stage half-recorded. What later stages
// need from an earlier one lives in files the earlier stage wrote before its
// record: omega.h5 (Ω), ckpt/ (the trainable tensors after train or retune),
// masks.h5 (the pruning plan). Re-running a recipe rebuilds the in-memory
// state from those files in stage order, so `dsee run` after a crash or a
// pre-emption continues where the previous process stopped.
//
// Note [Data parallelism in the pipeline]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Every rank runs the same stages and issues the same collectives in the
// same order; what differs is who computes and who writes:
//  - start-up: the ranks compare fingerprints of the resolved config, the
//    library versions, the model's tensor shapes, the pretrained weights and
//    the training data (fingerprint_verify*: a mismatch names the ranks and
//    the thing on every rank, so all of them stop with the same error);
//  - files: only rank 0 touches the run directory, through root_does(),
//    which also tells every rank whether rank 0 succeeded (a broadcast, so
//    it is a barrier too) and turns rank 0's failure into the same error on
//    every rank; whether a stage is finished is rank 0's answer, broadcast;
//  - Ω, the pruning plan and saved trainable tensors: rank 0 computes or
//    reads them, broadcast_from_root sends them (checked by fingerprint);
//    with omega.split_across_ranks each rank computes Ω of its share of the
//    matrices first and all_gather_rows assembles them
//    (omega_select_across_ranks), then the same broadcast and check follow;
//  - training: each rank takes its contiguous piece of every global
//    micro-batch (DistributedSampler); its loss is the piece's mean scaled
//    by pieces/ranks so that the average of the ranks' gradients is the
//    1-rank gradient even when pieces differ in size; GradientSync averages
//    the trainable gradients once per optimizer step; every
//    dist.fingerprint_every steps the ranks compare their trainable tensors
//    and the order of their collectives (fingerprint_verify_state: a
//    mismatch names the tensor or "collective order");
//  - evaluation: each rank predicts its batch_shard_range of the dev set
//    (whole eval.batch_size batches of the 1-rank run: the same forward
//    passes, so the same logits bit for bit) and all_gather_rows restores
//    the 1-rank order, so the metrics and predictions are the 1-rank ones
//    on every rank.
// Dropout draws differ between 1 and N ranks (each rank draws for its piece
// only), so bit-for-bit agreement with 1 rank holds only without dropout.
//
// Note [The pipeline on CUDA]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~
// run.device picks where an arm computes (core/model/device.h: auto is CUDA when a
// GPU is usable; rank r takes GPU local_rank % count). The model is loaded
// onto that device (frozen weights in bf16 with run.precision = bf16), so the
// tuning's A, B, S values and the head are created there, Ω is computed there
// by rank 0, and AdamW's moments live there. The task's data stays on the
// CPU: task_loss copies each micro-batch to the model's device, and
// evaluation copies each batch there and its logits back. Everything written
// (safetensors, checkpoints, masks, predictions, the export) is copied to the
// CPU by the writer. `dsee run` builds the communicator for the same device
// (NCCL for CUDA under dist.backend = auto), and pipeline_device checks the
// two agree. Checkpoints carry the CUDA generators' states and a resume
// restores them; a CUDA run is deterministic only up to the kernels'
// reduction order (index_add's atomics in S's backward, cuBLAS algorithms),
// so bit-for-bit resume is a CPU guarantee, on CUDA it holds to round-off.
#include "recipes/pipeline.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>

#include "base/env_vars.h"
#include "base/error.h"
#include "base/files.h"
#include "base/shape_text.h"
#include "base/versions.h"
#include "core/io/safetensors.h"
#include "core/model/device.h"
#include "core/model/pretrained_model.h"
#include "core/sparsity/omega_file.h"
#include "core/sparsity/prune_plan.h"
#include "core/sparsity/pruning.h"
#include "core/train/checkpoint.h"
#include "core/train/losses.h"
#include "core/train/metrics.h"
#include "core/train/trainer.h"
#include "core/tuning/counting.h"
#include "core/tuning/tuning.h"
#include "data/distributed_sampler.h"
#include "distributed/coordinator.h"
#include "distributed/fingerprint.h"
#include "distributed/gradient_sync.h"
#include "distributed/nccl_info.h"
#include "distributed/stop_signal.h"
#include "recipes/demo_data.h"
#include "recipes/export.h"
#include "recipes/recipe_schema.h"
#include "recipes/task_data.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// DSEE_TEST_PERTURB_RANK=RANK:WHAT (tests only): that rank perturbs what
// the ranks compare, so the fingerprint checks have a divergence to catch.
// WHAT is an optimizer step (after it, the rank adds 1 to the first value
// of its first trainable tensor) or "versions" (the rank's library versions
// text gets a line more).
struct TestPerturb {
  int rank = -1;
  std::string what;
};

std::optional<TestPerturb> test_perturb_rank() {
  const char* text = std::getenv(env_vars::test_perturb_rank);
  if (text == nullptr || *text == 0) return std::nullopt;
  const std::string value = text;
  const auto colon = value.find(':');
  DSEE_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < value.size(),
             "{}='{}': expected RANK:STEP or RANK:versions", env_vars::test_perturb_rank, value);
  return TestPerturb{std::atoi(value.substr(0, colon).c_str()), value.substr(colon + 1)};
}

// One line per library whose version changes results, compared across ranks.
std::string library_versions_text(const PipelineRanks& ranks) {
  const BuildInfo info = build_info();
  const NcclInfo nccl = nccl_info();
  std::string text = fmt::format("dsee {}\ntorch {}\ncuda {}\nnccl {}\nhdf5 {}\nmpi {}\n", info.dsee_version,
                                 info.torch_version, info.cuda_runtime.empty() ? "none" : info.cuda_runtime,
                                 nccl.enabled ? nccl.loaded : "none", info.hdf5_loaded, ranks.mpi_library);
  if (const auto perturb = test_perturb_rank(); perturb && perturb->rank == ranks.rank && perturb->what == "versions")
    text += fmt::format("perturbed by {}\n", env_vars::test_perturb_rank);
  return text;
}

void run_dir_claim_root(const fs::path& run_dir, const Config& config);

// The recipe as the run directory and its checkpoints record it: the
// resolved config without run.stages, which says what one invocation runs,
// not what the run is (Note [Choosing stages]).
std::string recipe_identity(const Config& config) {
  return Config::parse(recipe_schema(), config.to_toml(), config.source(), {"run.stages=[]"}).to_toml();
}

// "key = value" lines of a resolved config (sections folded into the key).
std::map<std::string, std::string> config_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line, table;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.front() == '[') {
      table = line.substr(1, line.size() - 2);
      continue;
    }
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    out[(table.empty() ? "" : table + ".") + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

// The run directory records the recipe it belongs to; another recipe is refused.
void run_dir_claim(const fs::path& run_dir, const Config& config, const PipelineRanks& ranks) {
  root_writes(ranks, "claiming the run directory", [&] { run_dir_claim_root(run_dir, config); });
}

void run_dir_claim_root(const fs::path& run_dir, const Config& config) {
  fs::create_directories(run_dir / "stages");
  const auto path = run_dir / "config.toml";
  const std::string text = recipe_identity(config);
  if (fs::exists(path)) {
    const std::string recorded = file_read_text(path);
    if (recorded == text) return;
    const auto a = config_lines(recorded), b = config_lines(text);
    std::vector<std::string> differences;
    for (const auto& [key, value] : b) {
      const auto it = a.find(key);
      if (it == a.end() || it->second != value)
        differences.push_back(
            fmt::format("{}: {} in the run, {} now", key, it == a.end() ? "absent" : it->second, value));
    }
    throw Error(
        fmt::format("run directory '{}' was made by a different recipe ({}); choose another run.name or "
                    "delete the directory to start over",
                    run_dir.string(), fmt::join(differences, "; ")));
  }
  file_write_text(path, text);
}

TuningOptions tuning_options_of(const Config& c) {
  TuningOptions o;
  o.method = tuning_method_from_name(c.get_string("tuning.method"));
  o.rank = c.get_int("tuning.rank");
  o.alpha = c.get_float("tuning.alpha");
  o.dropout = c.get_float("tuning.dropout");
  o.target_modules = c.get_strings("tuning.target_modules");
  o.seed = static_cast<std::uint64_t>(c.get_int("run.seed"));
  o.mask_update = c.get_bool("retune.mask_update");
  return o;
}

OmegaOptions omega_options_of(const Config& c) {
  OmegaOptions o;
  o.method = omega_method_from_name(c.get_string("omega.method"));
  o.c = c.get_int("omega.c");
  o.seed = static_cast<std::uint64_t>(c.get_int("omega.seed"));
  o.grebsmo = grebsmo_default_options(grebsmo_variant_from_name(c.get_string("omega.variant")));
  if (c.get_int("omega.max_rank") > 0) o.grebsmo.max_rank = c.get_int("omega.max_rank");
  o.grebsmo.tol = c.get_float("omega.tol");
  o.workers = static_cast<int>(c.get_int("omega.workers"));
  return o;
}

OmegaFileInfo omega_info_of(const OmegaOptions& o) {
  return {omega_method_name(o.method), grebsmo_variant_name(o.grebsmo.variant), o.seed, o.c};
}

DemoOptions demo_options_of(const Config& c) {
  DemoOptions o;
  o.train_size = c.get_int("task.train_size");
  o.dev_size = c.get_int("task.dev_size");
  o.omega = omega_options_of(c);
  o.omega.method = OmegaMethod::grebsmo;  // the teacher plants on GreBsmo's Ω whatever the arm uses
  o.omega.c = std::max<std::int64_t>(o.omega.c, 1);
  return o;
}

// The state one arm builds up, stage by stage.
struct Run {
  Run(const Config& c, fs::path d, const PipelineRanks& r) : config(c), dir(std::move(d)), ranks(r) {}
  const Config& config;
  fs::path dir;
  const PipelineRanks& ranks;
  TaskData data;
  std::unique_ptr<PretrainedModel> model;
  std::vector<OmegaEntry> omega;
  std::shared_ptr<ModelTuning> tuning;
  PrunePlan plan;
  nlohmann::json stages = nlohmann::json::object();
  fs::path model_path;
  OmegaFileInfo omega_info;
  std::optional<std::uint64_t> weights_hash;  // model_weights_hash(model_path), computed once when needed

  std::uint64_t model_hash() {
    if (!weights_hash) weights_hash = model_weights_hash(model_path);
    return *weights_hash;
  }
};

// Rank 0 decides (its stages/<stage>.json) and tells every rank.
bool stage_done(Run& run, const std::string& stage) {
  const auto path = run.dir / "stages" / (stage + ".json");
  const std::string record = root_does(run.ranks, fmt::format("reading stages/{}.json", stage), [&] {
    return fs::exists(path) ? file_read_json(path, "delete it to redo that stage").dump() : std::string();
  });
  if (record.empty()) return false;
  run.stages[stage] = nlohmann::json::parse(record);
  spdlog::info("{}: stage {} finished before, skipped", run.dir.filename().string(), stage);
  return true;
}

void stage_record(Run& run, const std::string& stage, nlohmann::json record) {
  root_writes(run.ranks, fmt::format("writing stages/{}.json", stage),
              [&] { file_write_json(run.dir / "stages" / (stage + ".json"), record); });
  run.stages[stage] = std::move(record);
}

// Counts of the model as it would deploy now, FLOPs at the task's sequence length.
nlohmann::json counts_of(Run& run) {
  const auto count = model_count(*run.model, run.data.seq_len());
  return {{"trainable_parameters", trainable_parameter_count(*run.tuning)},
          {"parameters", count.parameters},
          {"nonzero_parameters", count.nonzero_parameters},
          {"flops_dense", count.flops_dense},
          {"flops_nonzero", count.flops_nonzero}};
}

NamedTensors trainables_of(Run& run) {
  NamedTensors tensors;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) tensors.emplace_back(name, tensor.detach());
  return tensors;
}

// Copies saved trainable tensors into the attached tuning's (same names and
// shapes). Rank 0 reads the file and broadcasts what it read.
void trainables_load(Run& run, const fs::path& path) {
  NamedTensors saved;
  root_writes(run.ranks, "reading " + path.filename().string(), [&] {
    const auto file = SafetensorsCheckpoint::open(path);
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
      DSEE_CHECK(file.contains(name), "{}: tensor '{}' is missing; delete the run's stages/ to redo them",
                 path.string(), name);
      const auto value = file.tensor(name);
      DSEE_CHECK(value.sizes() == tensor.sizes(), "{}: tensor '{}' has shape {}, the run expects {}", path.string(),
                 name, shape_text(value.sizes()), shape_text(tensor.sizes()));
      saved.emplace_back(name, value.to(tensor.scalar_type()).contiguous());
    }
  });
  if (run.ranks.comm != nullptr) {
    if (!run.ranks.root()) saved = trainables_of(run);  // shapes only; rank 0's values replace them
    saved = broadcast_from_root(*run.ranks.comm, saved, fmt::format("trainable tensors read from {}", path.string()));
  }
  at::NoGradGuard no_grad;
  std::size_t i = 0;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) tensor.copy_(saved.at(i++).tensor);
}

void trainables_save(Run& run, const fs::path& path) {
  root_writes(run.ranks, "writing " + path.filename().string(), [&] { safetensors_save(path, trainables_of(run)); });
}

// DSEE_TEST_PERTURB_RANK=RANK:STEP on that rank after that step.
void test_perturb(Run& run, std::int64_t step) {
  auto [name, tensor] = run.tuning->trainable_parameters().front();
  spdlog::warn("{}: rank {} adds 1 to tensor '{}' after step {}", env_vars::test_perturb_rank, run.ranks.rank, name,
               step);
  at::NoGradGuard no_grad;
  tensor.view({-1})[0].add_(1.0);
}

// The trainer's hooks for data parallelism (Note [The loop on many ranks] in
// core/train/trainer.cpp): gradient averaging, the global loss, agreed stops, the
// watchdog's step and the periodic fingerprint of the trainable tensors.
void data_parallel_options(Run& run, Communicator& comm, std::unique_ptr<GradientSync>& sync, TrainerOptions& options) {
  std::vector<at::Tensor> parameters;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) parameters.push_back(tensor);
  sync = std::make_unique<GradientSync>(comm, std::move(parameters));
  auto* gradient_sync = sync.get();
  options.sync_gradients = [gradient_sync] { gradient_sync->average_gradients(); };
  options.sum_over_ranks = [&comm](std::vector<double>& values) {
    at::Tensor sums = at::tensor(values, at::kDouble).to(comm.device());
    comm.all_reduce_sum(sums);
    sums = sums.cpu().contiguous();
    std::copy_n(sums.data_ptr<double>(), values.size(), values.begin());
  };
  options.should_stop = [&comm] { return stop_requested_on_any_rank(comm); };
  const std::int64_t every = run.config.get_int("dist.fingerprint_every");
  const auto perturb = test_perturb_rank();
  options.after_step = [&run, &comm, every, perturb](std::int64_t step) {
    comm.set_step(step + 1);
    if (perturb && perturb->rank == comm.rank() && perturb->what == std::to_string(step)) test_perturb(run, step);
    if (every > 0 && step % every == 0)
      fingerprint_verify_state(comm, fmt::format("trainable parameters after step {}", step), trainables_of(run));
  };
  comm.set_step(1);
}

// train.metric_for_best, or the task's main metric (demo: accuracy).
std::string metric_for_best_of(const Config& c) {
  const auto& name = c.get_string("train.metric_for_best");
  return name.empty() ? task_main_metric(c.get_string("task.name")) : name;
}

}  // namespace

TrainerOptions recipe_trainer_options(const Config& c, const std::string& stage) {
  DSEE_ASSERT(stage == "train" || stage == "retune", "no training stage '{}'", stage);
  TrainerOptions options;
  const bool train = stage == "train";
  options.epochs = c.get_int(train ? "train.epochs" : "retune.epochs");
  options.max_steps = train ? c.get_int("train.max_steps") : 0;
  options.lr = !train && c.get_float("retune.lr") > 0 ? c.get_float("retune.lr") : c.get_float("train.lr");
  options.grad_accumulation = c.get_int("train.grad_accumulation");
  options.adamw.weight_decay = c.get_float("train.weight_decay");
  options.adamw.exclude_bias_and_norm = c.get_bool("train.decay_exclude_bias_norm");
  options.adamw.beta1 = c.get_float("train.adam_beta1");
  options.adamw.beta2 = c.get_float("train.adam_beta2");
  options.adamw.eps = c.get_float("train.adam_epsilon");
  options.schedule.kind = lr_schedule_kind_from_name(c.get_string("train.schedule"));
  options.schedule.warmup_ratio = c.get_float("train.warmup_ratio");
  options.schedule.warmup_steps = c.get_int("train.warmup_steps");
  DSEE_CHECK(options.schedule.warmup_ratio == 0 || options.schedule.warmup_steps == 0,
             "train.warmup_ratio ({}) and train.warmup_steps ({}) are both set; give the warm-up one way",
             options.schedule.warmup_ratio, options.schedule.warmup_steps);
  options.max_grad_norm = c.get_float("train.max_grad_norm");
  options.skip_nonfinite = c.get_bool("train.skip_nonfinite");
  options.eval_every = c.get_int("train.eval_every");
  options.early_stopping_patience = c.get_int("train.early_stopping_patience");
  options.metric_for_best = metric_for_best_of(c);
  options.greater_is_better = c.get_bool("train.greater_is_better");
  return options;
}

namespace {

// Note [Resuming a training stage]
// The train stage checkpoints into ckpt/, the retune stage into
// ckpt/retune/ (ckpt.every steps, 0: each epoch end; ckpt.keep_last kept),
// and on a stop signal when run.checkpoint_on_signal (distributed/stop_signal.h).
// A stage that is not finished (no stages/<stage>.json) and finds a readable
// checkpoint in its folder continues from it: the recipe and the pretrained
// weights must match (checkpoint_check_compatible), then the trainable
// tensors, AdamW's state, the RNG states and the trainer's progress (kept
// in the checkpoint's /scheduler attributes, Note [Resuming] in
// core/train/trainer.cpp) come back and the trainer goes on bit-exactly. The
// stage's seconds count only this process's part. Under data parallelism
// rank 0 picks, verifies and reads the checkpoint and broadcasts what a
// resume needs (checkpoint_state_from_root); checkpoints are written by rank
// 0 inside root_writes, which every rank enters at the same step. The data
// position is global, so a run resumes on any number of ranks.
constexpr const char* kProgressKeys[] = {
    "step", "skipped_steps", "best_metric", "best_step", "evaluations_without_gain", "metrics_bytes"};

std::map<std::string, double> progress_to_scheduler(const TrainerProgress& p) {
  return {{"step", static_cast<double>(p.step)},
          {"skipped_steps", static_cast<double>(p.skipped_steps)},
          {"best_metric", p.best_metric ? *p.best_metric : std::numeric_limits<double>::quiet_NaN()},
          {"best_step", static_cast<double>(p.best_step)},
          {"evaluations_without_gain", static_cast<double>(p.evaluations_without_gain)},
          {"metrics_bytes", static_cast<double>(p.metrics_bytes)}};
}

TrainerProgress progress_from_checkpoint(const fs::path& path, const CheckpointState& state) {
  for (const char* key : kProgressKeys)
    DSEE_CHECK(state.scheduler.contains(key), "{}: scheduler attribute '{}' is missing; not a `dsee run` checkpoint",
               path.string(), key);
  const auto& m = state.scheduler;
  TrainerProgress p;
  p.step = state.step;
  p.epoch = state.epoch;
  p.sample_index = state.sample_index;
  p.skipped_steps = static_cast<std::int64_t>(m.at("skipped_steps"));
  if (!std::isnan(m.at("best_metric"))) p.best_metric = m.at("best_metric");
  p.best_step = static_cast<std::int64_t>(m.at("best_step"));
  p.evaluations_without_gain = static_cast<std::int64_t>(m.at("evaluations_without_gain"));
  p.metrics_bytes = static_cast<std::int64_t>(m.at("metrics_bytes"));
  DSEE_CHECK(static_cast<std::int64_t>(m.at("step")) == state.step, "{}: scheduler step {} differs from step {}",
             path.string(), m.at("step"), state.step);
  return p;
}

// Note [The best evaluation]
// Every evaluation that improves train.metric_for_best (the trainer's
// on_best, on every rank at the same step) keeps a copy of the trainable
// tensors in memory; checkpoints carry that copy (/best), so a resumed stage
// has the same best as an uninterrupted one. At the stage's end the copy is
// written to trainable-<stage>-best.safetensors (metadata "step") and, with
// train.load_best_at_end, copied back into the model, so pruning, re-tuning,
// evaluation and export continue from the best evaluation instead of the
// last step. stages/<stage>.json records it under "best".
// DSEE_TEST_STOP_AFTER_STEP (tests only): steps of this process before a self-SIGTERM; 0: never.
std::int64_t test_stop_after_step() {
  const char* text = std::getenv(env_vars::test_stop_after_step);
  return text ? std::atoll(text) : 0;
}

// DSEE_TEST_STEP_PAUSE_S (tests only): seconds added to every training step; 0: none.
double test_step_pause_s() {
  const char* text = std::getenv(env_vars::test_step_pause_s);
  return text ? std::atof(text) : 0;
}

// One training stage (train or retune): the trainer over the task's data.
nlohmann::json train_stage(Run& run, const std::string& stage) {
  const auto& c = run.config;
  const auto start = Clock::now();
  TrainerOptions options = recipe_trainer_options(c, stage);
  if (run.ranks.root()) options.metrics_path = run.dir / "metrics.jsonl";
  options.metrics_stage = stage;
  options.progress = run.ranks.root();
  const auto micro_batch = c.get_int("train.batch_size") / options.grad_accumulation;
  DSEE_CHECK(micro_batch >= 1 && micro_batch * options.grad_accumulation == c.get_int("train.batch_size"),
             "train.batch_size ({}) must be a multiple of train.grad_accumulation ({})", c.get_int("train.batch_size"),
             options.grad_accumulation);
  TaskBatches batches(run.data.train, micro_batch,
                      static_cast<std::uint64_t>(c.get_int("run.seed")) + (stage == "train" ? 0 : 1), run.ranks.rank,
                      run.ranks.world_size);
  at::manual_seed(static_cast<std::uint64_t>(c.get_int("run.seed")));  // dropout
  std::unique_ptr<GradientSync> sync;
  if (auto* comm = run.ranks.comm) data_parallel_options(run, *comm, sync, options);

  // checkpoints and stop signals (Note [Resuming a training stage])
  const fs::path ckpt_dir = stage == "train" ? run.dir / "ckpt" : run.dir / "ckpt" / stage;
  const int keep_last = static_cast<int>(c.get_int("ckpt.keep_last"));
  const std::string config_text = recipe_identity(c);
  Trainer* trainer_of_hook = nullptr;
  fs::path last_checkpoint;
  std::int64_t last_checkpoint_step = -1;
  // The trainable tensors at the best evaluation so far (Note [The best evaluation]).
  NamedTensors best;
  std::int64_t best_step = -1;
  const auto on_best = [&](std::int64_t step) {
    best.clear();
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) best.push_back({name, tensor.detach().clone()});
    best_step = step;
  };
  options.checkpoint_every = c.get_int("ckpt.every");
  options.on_checkpoint = [&](const TrainerProgress& progress) {
    CheckpointState state;
    state.step = progress.step;
    state.epoch = progress.epoch;
    state.sample_index = progress.sample_index;
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) state.trainable.push_back({name, tensor.detach()});
    state.best = best;
    state.optimizer = trainer_of_hook->optimizer().state_export();
    state.optimizer_step = progress.step;
    state.scheduler = progress_to_scheduler(progress);
    checkpoint_capture_rng(state);
    state.omega = run.omega;
    state.omega_info = run.omega_info;
    state.plan = run.plan;
    state.config_text = config_text;
    state.model_path = run.model_path.string();
    state.model_weights_hash = run.model_hash();
    // Every rank reaches this hook at the same step (the trainer's branches
    // agree, Note [The loop on many ranks]); rank 0 writes, then all go on.
    // rank 0 writes it, every rank learns its path
    last_checkpoint = root_does(run.ranks, "writing a checkpoint",
                                [&] { return checkpoint_write(ckpt_dir, state, keep_last).string(); });
    last_checkpoint_step = progress.step;
    spdlog::debug("{}: checkpoint {}", run.dir.filename().string(), last_checkpoint.string());
  };
  // A stop signal always ends the stage at a step boundary; the checkpoint
  // is written only with run.checkpoint_on_signal. With ranks the stop is
  // agreed by all (a collective), so every rank leaves at the same step.
  install_stop_handlers();
  options.checkpoint_on_stop = c.get_bool("run.checkpoint_on_signal");
  options.should_stop = [steps = std::int64_t{0}, limit = test_stop_after_step(), pause = test_step_pause_s(),
                         comm = run.ranks.comm]() mutable {
    if (pause > 0) std::this_thread::sleep_for(std::chrono::duration<double>(pause));
    if (limit > 0 && ++steps == limit) std::raise(SIGTERM);
    return comm != nullptr ? stop_requested_on_any_rank(*comm) : stop_requested();
  };

  Trainer trainer(run.tuning->trainable_parameters(), options);
  trainer_of_hook = &trainer;
  const std::int64_t total = trainer.total_steps(batches);
  std::optional<TrainerProgress> resume;
  // Rank 0 picks and reads the checkpoint; the others receive what they need.
  std::optional<LoadedCheckpoint> loaded;
  const std::string loaded_path = root_does(run.ranks, "reading the latest checkpoint", [&] {
    loaded = checkpoint_load_latest(ckpt_dir);
    if (!loaded) return std::string();
    checkpoint_check_compatible(loaded->path, loaded->state, config_text, run.model_hash());
    return loaded->path.string();
  });
  if (!loaded_path.empty()) {
    if (!run.ranks.root()) loaded.emplace();
    loaded->path = loaded_path;
    checkpoint_state_from_root(run.ranks, loaded->state);
    resume = progress_from_checkpoint(loaded->path, loaded->state);
    at::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> saved;
    for (const auto& [name, tensor] : loaded->state.trainable) saved[name] = tensor;
    for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
      const auto it = saved.find(name);
      DSEE_CHECK(it != saved.end(), "{}: trainable tensor '{}' is missing", loaded->path.string(), name);
      DSEE_CHECK(it->second.sizes() == tensor.sizes(), "{}: trainable tensor '{}' has shape {}, the run expects {}",
                 loaded->path.string(), name, shape_text(it->second.sizes()), shape_text(tensor.sizes()));
      tensor.copy_(it->second);
    }
    trainer.optimizer().state_import(loaded->state.optimizer);
    checkpoint_restore_rng(loaded->state);
    best = loaded->state.best;
    best_step = best.empty() ? -1 : resume->best_step;
    spdlog::info("{}: resuming {} from {} (step {} of {})", run.dir.filename().string(), stage,
                 fs::relative(loaded->path, run.dir).string(), resume->step, total);
  }

  auto* model = run.model.get();
  auto* tuning = run.tuning.get();
  const auto loss = [&](const TrainBatch& batch) {
    tuning->set_training(true);
    if (batch.samples == 0) {  // an empty piece of a short global batch: zero loss, zero gradients
      at::Tensor zero = at::zeros({}, at::TensorOptions().device(model->device()));
      for (auto& [name, tensor] : tuning->trainable_parameters()) zero = zero + tensor.sum() * 0;
      return zero;
    }
    const auto mean = task_loss(*model, batch);
    return run.ranks.comm != nullptr ? mean * batches.loss_scale() : mean;
  };
  const auto evaluate = [&] { return task_evaluate(*model, tuning, run.data, run.ranks.comm); };
  spdlog::info("{}: {} ({} epochs, lr {}, on {})", run.dir.filename().string(), stage, options.epochs, options.lr,
               model->device().str());
  const auto result = trainer.run(batches, loss, evaluate, on_best, resume ? &*resume : nullptr);
  if (result.stop_requested) {
    stop_signals_ignore();  // every rank agreed, the checkpoint is written
    const int signal = stop_signal();
    const std::string by = signal == SIGINT    ? "SIGINT"
                           : signal == SIGTERM ? "SIGTERM"
                           : signal == SIGUSR1 ? "SIGUSR1"
                                               : fmt::format("signal {}", signal);
    if (last_checkpoint_step == result.steps)  // written at the stop (a periodic one, too, is due then)
      throw StopRequested(signal, fmt::format("stopped by {} at step {} of {}; checkpoint {}; run the same command "
                                              "again to resume",
                                              by, result.steps, total, last_checkpoint.string()));
    // The newest checkpoint of the stage, if any: this process's periodic one, or the one it resumed from.
    const std::string resume_from = !last_checkpoint.empty() ? last_checkpoint.string()
                                    : !loaded_path.empty()   ? loaded_path
                                                             : "the start of the stage (no checkpoint yet)";
    throw StopRequested(signal, fmt::format("stopped by {} at step {} of {}; no checkpoint written "
                                            "(run.checkpoint_on_signal = false); running the same command again "
                                            "resumes from {}",
                                            by, result.steps, total, resume_from));
  }
  nlohmann::json best_record;
  if (result.best_step >= 0 && best_step != result.best_step) {
    // Resumed from a checkpoint written before checkpoints carried /best.
    DSEE_CHECK(!c.get_bool("train.load_best_at_end"),
               "{}: the best evaluation (step {}) came before the checkpoint this stage resumed from, and that "
               "checkpoint holds no /best tensors (an older dsee wrote it); set train.load_best_at_end = false or "
               "delete {} to train the stage again",
               stage, result.best_step, ckpt_dir.string());
    spdlog::warn(
        "{}: the tensors of the best evaluation (step {}) are not in the checkpoint this stage resumed from; "
        "trainable-{}-best.safetensors is not written",
        stage, result.best_step, stage);
  } else if (result.best_step >= 0) {
    NamedTensors tensors;
    for (const auto& [name, tensor] : best) tensors.emplace_back(name, tensor);
    root_writes(run.ranks, fmt::format("writing trainable-{}-best.safetensors", stage), [&] {
      safetensors_save(run.dir / fmt::format("trainable-{}-best.safetensors", stage), tensors,
                       {{"format", "pt"}, {"step", std::to_string(result.best_step)}});
    });
    best_record = {{"step", result.best_step}, {"metric", options.metric_for_best}, {"value", *result.best_metric}};
    if (c.get_bool("train.load_best_at_end")) {
      at::NoGradGuard no_grad;
      std::size_t i = 0;
      for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
        DSEE_ASSERT(best.at(i).name == name, "best tensor {} is '{}', the run's is '{}'", i, best.at(i).name, name);
        tensor.copy_(best.at(i++).tensor);
      }
      spdlog::info("{}: {} ends with the tensors of its best evaluation (step {}, {} = {})",
                   run.dir.filename().string(), stage, result.best_step, options.metric_for_best, *result.best_metric);
    }
    best_record["loaded"] = c.get_bool("train.load_best_at_end");
  }
  trainables_save(run, run.dir / fmt::format("trainable-{}.safetensors", stage));
  nlohmann::json record = counts_of(run);
  if (!best_record.is_null()) record["best"] = best_record;
  record["dev"] = evaluate();
  record["steps"] = result.steps;
  record["device"] = model->device().str();
  if (run.ranks.comm != nullptr) record["communicator"] = run.ranks.comm->backend();
  if (sync) record["allreduce_bytes_per_step"] = sync->bytes_per_step();
  record["skipped_steps"] = result.skipped_steps;
  record["seconds"] = seconds_since(start);
  return record;
}

// Start-up check that every rank loaded the same model and data.
void model_and_data_verify(Run& run, const fs::path& model_path) {
  auto& comm = *run.ranks.comm;
  std::string shapes;
  for (const auto& slot : run.model->tensor_slots())
    shapes += fmt::format("{} {} {}\n", slot.name, shape_text(slot.tensor->sizes()),
                          c10::toString(slot.tensor->scalar_type()));
  fingerprint_verify_text(comm, "model's tensor shapes", shapes);
  fingerprint_verify(comm, fmt::format("pretrained weights ({})", model_path.string()), run.model_hash());
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

// Where the arm computes (Note [The pipeline on CUDA]): run.device on this
// rank's GPU, the device the communicator was built for.
c10::Device pipeline_device(const Config& config, const PipelineRanks& ranks) {
  const c10::Device device = device_choose(config.get_string("run.device"), ranks.local_rank, "run.device");
  if (ranks.comm != nullptr)
    DSEE_CHECK(ranks.comm->device().type() == device.type(),
               "run.device = {} computes on {}, but the communicator ({}) was built for {}; dsee run builds both from "
               "run.device",
               config.get_string("run.device"), device.str(), ranks.comm->backend(), ranks.comm->device().str());
  return device;
}

// Note [Choosing stages]
// ~~~~~~~~~~~~~~~~~~~~~~~
// run.stages lists the stages one invocation runs, in pipeline order; empty:
// all the recipe configures. The pipeline still walks every stage in order:
// a finished stage is loaded from its files as always, a listed one runs,
// and an unlisted one that has not run stops the invocation with an error
// (a later listed stage needs it). After the last listed stage the arm
// returns a partial summary ("stopped_after"); summary.json is written only
// when eval runs. run.stages is left out of the run directory's recorded
// recipe and of checkpoints (recipe_identity), so the same run directory can
// be driven stage by stage: run.stages = ["omega"], then ["train"], then the
// rest.
constexpr const char* kStageOrder[] = {"omega", "train", "prune", "retune", "eval", "export"};

struct StagePlan {
  std::vector<std::string> listed;  // empty: every configured stage
  bool runs(const std::string& stage) const {
    return listed.empty() || std::find(listed.begin(), listed.end(), stage) != listed.end();
  }
  bool ends_with(const std::string& stage) const { return !listed.empty() && listed.back() == stage; }
};

// Checks run.stages: known names, pipeline order and, for a single run,
// that each listed stage is configured. Arms of run.compare skip a listed
// stage they do not configure (a lora arm has no omega) but still stop at
// its place.
StagePlan stage_plan_of(const Config& c, bool arm) {
  StagePlan plan{c.get_strings("run.stages")};
  const auto order = [](const std::string& stage) {
    return std::find(std::begin(kStageOrder), std::end(kStageOrder), stage) - std::begin(kStageOrder);
  };
  for (std::size_t i = 0; i < plan.listed.size(); ++i) {
    const auto& stage = plan.listed[i];
    DSEE_CHECK(order(stage) < std::ssize(kStageOrder), "run.stages: '{}' is not a stage; the stages are {}", stage,
               fmt::join(kStageOrder, ", "));
    DSEE_CHECK(i == 0 || order(plan.listed[i - 1]) < order(stage),
               "run.stages: '{}' comes after '{}'; list each stage once, in pipeline order ({})", stage,
               plan.listed[i - 1], fmt::join(kStageOrder, ", "));
  }
  const auto configured = [&](const std::string& stage, bool yes, const std::string& why) {
    DSEE_CHECK(arm || !plan.runs(stage) || plan.listed.empty() || yes, "run.stages lists {}, but {}", stage, why);
  };
  configured("omega", c.get_string("tuning.method") == "dsee",
             fmt::format("tuning.method = {} has no Ω (only dsee does)", c.get_string("tuning.method")));
  configured("prune", c.get_string("prune.kind") != "none", "prune.kind = none");
  configured("retune", c.get_string("prune.kind") != "none" && c.get_int("retune.epochs") > 0,
             "re-tuning needs prune.kind other than none and retune.epochs > 0");
  configured("export", c.get_string("export.format") != "none", "export.format = none");
  return plan;
}

// A stage that has not run in the directory and is not listed, before a listed one.
void stage_required(const Run& run, const StagePlan& plan, const std::string& stage) {
  DSEE_CHECK(plan.runs(stage),
             "run.stages = [{}] leaves out stage {}, which a listed stage needs and which has not run in '{}'; add "
             "it to run.stages",
             fmt::join(plan.listed, ", "), stage, run.dir.string());
}

// A training stage (train or retune): its saved tensors when it finished
// before, else the trainer (when run.stages allows it).
void training_stage(Run& run, const StagePlan& plan, const std::string& stage) {
  if (stage_done(run, stage)) {
    trainables_load(run, run.dir / fmt::format("trainable-{}.safetensors", stage));
    return;
  }
  stage_required(run, plan, stage);
  stage_record(run, stage, train_stage(run, stage));
}

// What an arm returns when run.stages ends before eval (Note [Choosing stages]).
nlohmann::json partial_summary(Run& run, const std::string& stage, Clock::time_point start) {
  spdlog::info("{}: run.stages ends with {}; run the recipe again (other run.stages, or none) to go on",
               run.dir.filename().string(), stage);
  return {{"method", run.config.get_string("tuning.method")},
          {"prune", run.config.get_string("prune.kind")},
          {"stopped_after", stage},
          {"stages", run.stages},
          {"seconds", seconds_since(start)}};
}

// One arm of the recipe in `dir`, data in `data_dir` (`arm`: one of run.compare's).
// `demo`: the demo data's options, the base recipe's for every arm, since the
// arms share one data folder and one teacher (Note [The arms' shared data]).
nlohmann::json run_arm(const Config& config, const fs::path& dir, const fs::path& data_dir, const PipelineRanks& ranks,
                       bool arm, const DemoOptions& demo) {
  const auto start = Clock::now();
  Run run(config, dir, ranks);
  const auto method = tuning_method_from_name(config.get_string("tuning.method"));
  const auto prune_kind = config.get_string("prune.kind");
  DSEE_CHECK(config.get_string("export.format") != "peft" || (method == TuningMethod::lora && prune_kind == "none"),
             "export.format = peft needs tuning.method = lora and prune.kind = none (got {} and {}): PEFT's LoRA has "
             "no sparse residual S, no masks and no removed heads; use export.format = hf",
             config.get_string("tuning.method"), prune_kind);
  const c10::Device device = pipeline_device(config, ranks);
  const StagePlan plan = stage_plan_of(config, arm);
  run_dir_claim(dir, config, ranks);

  // data + model: rank 0 writes the demo's data, the others read it back
  root_writes(ranks, "preparing the task data", [&] { run.data = task_data_prepare(config, demo, data_dir); });
  if (!ranks.root()) run.data = task_data_prepare(config, demo, data_dir);
  const auto model_path =
      config.get_string("model.path").empty() ? run.data.pretrained_dir : fs::path(config.get_string("model.path"));
  ModelLoadOptions load;
  load.task = ModelTask::sequence_classification;
  load.dtype = model_dtype_of_precision(config.get_string("run.precision"));
  load.device = device;
  if (run.data.task != "demo") {  // a new head of the task's size, seeded by the run
    load.num_labels = run.data.num_labels;
    load.head_seed = static_cast<std::uint64_t>(config.get_int("run.seed"));
  }
  run.model = model_load(model_path, load);
  run.model_path = model_path;
  if (ranks.comm != nullptr) model_and_data_verify(run, model_path);

  // omega
  if (method == TuningMethod::dsee) {
    run.omega_info = omega_info_of(omega_options_of(config));
    const auto options = tuning_options_of(config);
    const auto matrices =
        adapted_matrices(*run.model, options.target_modules.empty() ? default_target_modules(run.model->config().family)
                                                                    : options.target_modules);
    // Rank 0 computes Ω (or reads it back) and broadcasts it.
    if (stage_done(run, "omega")) {
      root_writes(ranks, "reading omega.h5", [&] {
        std::vector<OmegaExpected> expected;
        for (const auto& m : matrices) expected.push_back({m.name, m.rows, m.cols()});
        run.omega = omega_read(dir / "omega.h5", expected);
      });
      run.omega = omega_from_named(from_root(ranks, omega_to_named(run.omega), "Ω read from omega.h5"));
    } else {
      stage_required(run, plan, "omega");
      const auto t = Clock::now();
      std::vector<NamedMatrix> named;
      for (const auto& m : matrices) named.push_back({m.name, m.weight()});
      auto omega_options = omega_options_of(config);
      // Every rank computes its share of the matrices, or rank 0 all of them.
      const bool split = config.get_bool("omega.split_across_ranks");
      const auto share = split ? shard_range(static_cast<std::int64_t>(named.size()), ranks.rank, ranks.world_size)
                               : std::pair<std::int64_t, std::int64_t>{0, static_cast<std::int64_t>(named.size())};
      omega_options.on_matrix = omega_progress_log("", static_cast<std::size_t>(share.second - share.first));
      if (split) run.omega = omega_select_across_ranks(ranks, named, omega_options);
      root_writes(ranks, split ? "writing omega.h5" : "computing Ω", [&] {
        if (!split) run.omega = omega_select(named, omega_options);
        omega_write(dir / "omega.h5", run.omega, omega_info_of(omega_options));
      });
      run.omega = omega_from_named(from_root(ranks, omega_to_named(run.omega), "Ω"));
      stage_record(run, "omega", {{"matrices", run.omega.size()}, {"seconds", seconds_since(t)}});
    }
  }
  if (plan.ends_with("omega")) return partial_summary(run, "omega", start);
  run.tuning = tuning_attach(*run.model, tuning_options_of(config), run.omega);
  nlohmann::json pretrained = counts_of(run);
  pretrained["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data, ranks.comm);
  run.stages["pretrained"] = pretrained;
  {
    const auto metric = metric_for_best_of(config);
    std::vector<std::string> names;
    for (const auto& [name, value] : pretrained["dev"].items()) names.push_back(name);
    DSEE_CHECK(pretrained["dev"].contains(metric),
               "train.metric_for_best = '{}' is not among the evaluation's metrics ({}); use one of those, or leave it "
               "empty for the task's main metric",
               metric, fmt::join(names, ", "));
  }

  // train
  training_stage(run, plan, "train");
  if (plan.ends_with("train")) return partial_summary(run, "train", start);

  // prune + retune
  if (prune_kind != "none") {
    // Rank 0 computes the plan (or reads it back) and broadcasts it.
    if (stage_done(run, "prune")) {
      root_writes(ranks, "reading masks.h5", [&] { run.plan = prune_plan_read(dir / "masks.h5"); });
      run.plan = prune_plan_from_named(from_root(ranks, prune_plan_to_named(run.plan), "pruning plan from masks.h5"));
      prune_plan_apply(*run.model, run.plan);
    } else {
      stage_required(run, plan, "prune");
      const auto t = Clock::now();
      root_writes(ranks, "computing the pruning plan", [&] {
        run.plan = prune_kind == "heads"
                       ? structured_plan(*run.model, run.tuning.get(), config.get_int("prune.heads_per_layer"))
                       : unstructured_plan(*run.model, run.tuning.get(),
                                           {config.get_float("prune.p_adapt"), config.get_float("prune.p_rest")});
        prune_plan_write(dir / "masks.h5", run.plan);
      });
      run.plan = prune_plan_from_named(from_root(ranks, prune_plan_to_named(run.plan), "pruning plan"));
      prune_plan_apply(*run.model, run.plan);
      nlohmann::json record = counts_of(run);
      record["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data, ranks.comm);
      record["seconds"] = seconds_since(t);
      stage_record(run, "prune", record);
    }
  }
  if (plan.ends_with("prune")) return partial_summary(run, "prune", start);
  if (prune_kind != "none" && config.get_int("retune.epochs") > 0) training_stage(run, plan, "retune");
  if (plan.ends_with("retune")) return partial_summary(run, "retune", start);

  // eval (re-run whenever listed: it is cheap and reflects the files as they are)
  nlohmann::json final_record;
  if (plan.runs("eval")) {
    final_record = counts_of(run);
    const auto logits = task_dev_logits(*run.model, run.tuning.get(), run.data, ranks.comm);
    final_record["dev"] = task_metrics(run.data, logits);
    root_writes(ranks, "writing the dev predictions",
                [&] { task_write_predictions(run.data, logits, dir / "predictions-dev.safetensors"); });
    stage_record(run, "eval", final_record);
  }

  // export (skipped once done, like the training stages: `dsee export RUN_DIR` writes another copy)
  if (config.get_string("export.format") != "none" && plan.runs("export") && !stage_done(run, "export")) {
    root_writes(ranks, "exporting the model", [&] {
      export_write(*run.model, *run.tuning, export_format_from_name(config.get_string("export.format")),
                   dir / "export");
    });
    stage_record(run, "export", {{"format", config.get_string("export.format")}, {"path", (dir / "export").string()}});
  }

  if (final_record.is_null()) return partial_summary(run, "export", start);
  nlohmann::json summary = {{"method", config.get_string("tuning.method")},
                            {"prune", prune_kind},
                            {"trainable_parameters", final_record["trainable_parameters"]},
                            {"nonzero_parameters", final_record["nonzero_parameters"]},
                            {"flops_dense", final_record["flops_dense"]},
                            {"flops_nonzero", final_record["flops_nonzero"]},
                            {"dev", final_record["dev"]},
                            {"stages", run.stages},
                            {"seconds", seconds_since(start)}};
  root_writes(ranks, "writing summary.json", [&] { file_write_json(dir / "summary.json", summary); });
  return summary;
}

std::string accuracy_cell(const nlohmann::json& stages, const std::string& stage) {
  if (!stages.contains(stage) || !stages[stage]["dev"].contains("accuracy")) return "-";
  return fmt::format("{:.3f}", stages[stage]["dev"]["accuracy"].get<double>());
}

// The compare table: one line per arm.
void print_compare_table(const std::vector<std::pair<std::string, nlohmann::json>>& arms) {
  std::vector<std::vector<std::string>> rows = {{"arm", "method", "trainable", "non-zero params", "FLOPs (dense)",
                                                 "FLOPs (non-zero)", "dev acc: start", "trained", "pruned",
                                                 "re-tuned"}};
  for (const auto& [name, s] : arms)
    rows.push_back({name, s["method"].get<std::string>(),
                    fmt::format("{}", s["trainable_parameters"].get<std::int64_t>()),
                    fmt::format("{}", s["nonzero_parameters"].get<std::int64_t>()),
                    fmt::format("{}", s["flops_dense"].get<std::int64_t>()),
                    fmt::format("{}", s["flops_nonzero"].get<std::int64_t>()), accuracy_cell(s["stages"], "pretrained"),
                    accuracy_cell(s["stages"], "train"), accuracy_cell(s["stages"], "prune"),
                    accuracy_cell(s["stages"], "retune")});
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i)
      line += (i ? "  " : "") +
              (i == 0 ? fmt::format("{:<{}}", row[i], width[i]) : fmt::format("{:>{}}", row[i], width[i]));
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

TuningOptions recipe_tuning_options(const Config& config) { return tuning_options_of(config); }

nlohmann::json pipeline_run(const Config& config, const PipelineRanks& ranks) {
  const fs::path dir = fs::path(config.get_string("run.out_dir")) / config.get_string("run.name");
  const auto data_dir = dir / "data";
  if (ranks.comm != nullptr) {
    // As flat "section.key = value" lines, so a mismatch quotes the full key.
    std::string flat;
    for (const auto& [key, value] : config_lines(config.to_toml())) flat += key + " = " + value + "\n";
    fingerprint_verify_text(*ranks.comm, "resolved config", flat);
    fingerprint_verify_text(*ranks.comm, "library versions", library_versions_text(ranks));
  }
  const auto& compare = config.get_strings("run.compare");
  if (compare.empty()) return run_arm(config, dir, data_dir, ranks, false, demo_options_of(config));
  stage_plan_of(config, true);  // names and order, before the run directory is claimed
  // Note [The arms' shared data]
  // ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
  // The arms of a comparison learn one task from one data folder, dir/data.
  // For the demo that folder also fixes the teacher, whose planted sparse
  // entries sit on GreBsmo's Ω with the base recipe's omega.* settings. An
  // arm may change its own Ω (omega.c, say) but not the task: its data comes
  // from the base recipe's options, and task.* keys in an arm are refused.
  // (Before, an arm with another omega.c regenerated the shared folder with a
  // teacher of its own, so it learned a different task than the table's
  // other rows and rewrote their data.)
  for (const auto& text : compare)
    for (const auto& override_text : compare_arm_parse(text).overrides)
      DSEE_CHECK(!override_text.starts_with("task."),
                 "{}: run.compare arm '{}' sets {}: the arms of a comparison share the task and its data ({}); set "
                 "task.* keys in the recipe itself, or compare separate runs with dsee report",
                 config.source(), compare_arm_parse(text).name, override_text, data_dir.string());
  const DemoOptions demo = demo_options_of(config);

  run_dir_claim(dir, config, ranks);
  std::vector<std::pair<std::string, nlohmann::json>> arms;
  for (const auto& text : compare) {
    const auto arm = compare_arm_parse(text);
    auto overrides = arm.overrides;
    overrides.push_back("run.compare=[]");
    const Config arm_config =
        Config::parse(recipe_schema(), config.to_toml(), config.source() + " arm " + arm.name, overrides);
    arms.emplace_back(arm.name, run_arm(arm_config, dir / arm.name, data_dir, ranks, true, demo));
  }
  const bool partial =
      std::any_of(arms.begin(), arms.end(), [](const auto& arm) { return arm.second.contains("stopped_after"); });
  if (ranks.root() && !partial) print_compare_table(arms);
  if (partial)
    spdlog::info("{}: run.stages stopped the arms before eval; the comparison table is printed when they finish",
                 dir.filename().string());
  nlohmann::json summary = {{"arms", nlohmann::json::array()}};
  for (const auto& [name, s] : arms) summary["arms"].push_back({{"name", name}, {"summary", s}});
  root_writes(ranks, "writing summary.json", [&] { file_write_json(dir / "summary.json", summary); });
  return summary;
}
CompareArm compare_arm_parse(const std::string& text) {
  const auto colon = text.find(':');
  DSEE_CHECK(colon != std::string::npos && colon > 0, "run.compare: '{}' must read \"name: key=value key=value ...\"",
             text);
  CompareArm arm;
  arm.name = text.substr(0, colon);
  std::istringstream rest(text.substr(colon + 1));
  for (std::string assignment; rest >> assignment;) {
    DSEE_CHECK(assignment.find('=') != std::string::npos, "run.compare: arm '{}': '{}' is not key=value", arm.name,
               assignment);
    arm.overrides.push_back(assignment);
  }
  return arm;
}

}  // namespace dsee
