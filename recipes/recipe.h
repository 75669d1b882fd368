// The typed recipe: every key of the schema (recipe_schema.h) read once from
// a Config into plain fields, closed sets as enums. The stages read a Recipe,
// never the Config: recipe.cpp is the one place that knows key names, and the
// Config and its schema stay the parser and the source of the error messages
// for bad values (unknown key, wrong type, out of range, not a choice).
//
// Sections follow the keys' tables (recipe.train.lr is train.lr); the
// fields' comments give only what the type does not say (docs/recipes.md has
// every key's meaning).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/config.h"
#include "core/sparsity/grebsmo.h"
#include "core/sparsity/omega.h"
#include "core/sparsity/pruning.h"
#include "core/train/lr_schedule.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"

namespace dsee {

// The pipeline's stages in their order (Note [Choosing stages] in
// stages.cpp). "export" is a C++ keyword, hence export_.
enum class Stage { omega, train, prune, retune, eval, export_ };
inline constexpr Stage kStages[] = {Stage::omega,  Stage::train, Stage::prune,
                                    Stage::retune, Stage::eval,  Stage::export_};
// "omega", "train", ... (the names of run.stages and of stages/<stage>.json).
const char* stage_name(Stage stage);

enum class DeviceRequest { automatic, cpu, cuda };  // run.device: auto | cpu | cuda
enum class Precision { fp32, bf16 };
enum class PruneKind { none, unstructured, heads, imp, earlybert };
enum class ExportFormat { hf, peft };
enum class BackendRequest { automatic, mpi, nccl };  // dist.backend: auto | mpi | nccl

// The names as the recipe spells them.
const char* device_request_name(DeviceRequest device);
const char* precision_name(Precision precision);
const char* prune_kind_name(PruneKind kind);
const char* export_format_name(ExportFormat format);
const char* backend_request_name(BackendRequest backend);
// "hf" / "peft"; dsee::Error naming the accepted names.
ExportFormat export_format_from_name(const std::string& name);

struct Recipe {
  struct {
    std::string name, out_dir;
    std::int64_t seed = 42;
    DeviceRequest device = DeviceRequest::automatic;
    Precision precision = Precision::fp32;
    bool checkpoint_on_signal = true;
    std::vector<Stage> stages;         // names known and in pipeline order; empty: every configured stage
    std::vector<std::string> compare;  // the arms' texts (compare.h)
    std::int64_t compare_seeds = 1;    // runs of each arm, seeds run.seed, run.seed + 1, ...
    bool lock = true;
  } run;
  struct {
    std::string path;  // empty: the demo's generated model
  } model;
  struct {
    std::string name;  // "demo", a GLUE task's name, or a data-to-text task (e2e, webnlg, dart)
    std::string data_dir;
    std::string train_file, dev_file, format = "auto";  // data-to-text tasks; empty files: the task's defaults
    std::string test_file;  // data-to-text tasks: decoded by the eval stage when eval.splits lists "test"
    std::int64_t max_seq_length = 128;
    std::int64_t train_size = 2048, dev_size = 512;  // the demo's
    std::int64_t teacher_rank = 2;                   // the demo's teacher (recipes/demo_data.h)
    double teacher_lowrank_std = 0.05;
    double teacher_sparse_scale = 0.5;
    double teacher_margin = 0.0;
  } task;
  struct {
    TuningMethod method = TuningMethod::dsee;
    std::int64_t rank = 16;
    std::int64_t top_layers = 2;     // top_k
    std::int64_t adapter_size = 64;  // adapter: the bottleneck m
    std::string adapter_activation = "gelu";
    bool adapter_train_layernorm = true;
    std::int64_t prefix_length = 10;     // prefix: L
    bool prefix_projection = false;      // prefix: the reparameterisation MLP
    std::int64_t prefix_hidden = 512;    // prefix: the MLP's hidden width
    std::string prefix_init = "normal";  // prefix: normal | zero
    double alpha = 32.0, dropout = 0.0;
    std::vector<std::string> target_modules;
    std::string init_from;  // a finished run directory (recipes/init_from.h); empty: a fresh update
  } tuning;
  struct {
    std::int64_t c = 16;
    OmegaMethod method = OmegaMethod::grebsmo;
    GrebsmoVariant variant = GrebsmoVariant::reference;
    std::int64_t max_rank = 0;
    double tol = 1e-3;
    std::int64_t seed = 0, workers = 1;
    bool split_across_ranks = false;
    std::int64_t gradient_steps = 1, gradient_warmup_steps = 0;  // method gradient (recipes/omega_gradient.h)
  } omega;
  struct {
    double lr = 2e-4;
    std::int64_t epochs = 5, max_steps = 0, batch_size = 32, grad_accumulation = 1;
    double weight_decay = 0.0;
    bool decay_exclude_bias_norm = true;
    double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
    LrScheduleKind schedule = LrScheduleKind::linear;
    double warmup_ratio = 0.0;
    std::int64_t warmup_steps = 0;
    double max_grad_norm = 1.0;
    std::int64_t eval_every = 0;
    bool skip_nonfinite = false;
    std::int64_t early_stopping_patience = 0;
    std::string metric_for_best;  // empty: the task's main metric
    bool greater_is_better = true, load_best_at_end = false;
    double label_smoothing = 0.0;  // data-to-text tasks (causal LM loss)
    bool length_buckets = true;    // data-to-text tasks: batches of similar-length sequences (TaskBatchShape)
  } train;
  struct {
    PruneKind kind = PruneKind::none;
    PruneCriterion criterion = PruneCriterion::delta;
    double p_adapt = 0.3, p_rest = 0.3;
    std::int64_t heads_per_layer = 3;
    std::int64_t neurons_per_layer = 0;  // earlybert: feed-forward neurons removed per layer
    std::int64_t search_steps = 200;     // earlybert: optimizer steps of the coefficient search
    double l1 = 1e-4;                    // earlybert: λ of the ℓ1 penalty on the coefficients
    double sparsity = 0.5;               // imp: the pool's fraction removed after the last round
    std::int64_t imp_rounds = 10;        // imp: R
  } prune;
  struct {
    std::int64_t epochs = 3;
    double lr = 0.0;  // 0: train.lr
    bool mask_update = true;
  } retune;
  struct {
    std::int64_t batch_size = 256;
    // Decoding for the data-to-text tasks (core/train/generation.h).
    std::int64_t beam_size = 10, no_repeat_ngram_size = 4, max_new_tokens = 64, max_items = 0;
    double length_penalty = 0.9;
    std::vector<std::string> splits = {"dev"};  // the eval stage's splits: "dev", then optionally "test"
  } eval;
  struct {
    std::optional<ExportFormat> format;  // none: nullopt
  } export_;
  struct {
    std::int64_t keep_last = 2, every = 0;
  } ckpt;
  struct {
    double timeout_s = 600.0, root_timeout_s = 7200.0;
    BackendRequest backend = BackendRequest::automatic;
    std::int64_t fingerprint_every = 100;
  } dist;

  std::string source;    // where the recipe came from, for messages ("recipes/demo.toml")
  std::string resolved;  // every key as TOML (Config::to_toml): what the ranks compare at start-up
  // The resolved recipe without the keys that say how one invocation runs,
  // not what the run is (run.stages, run.lock): what config.toml and every
  // checkpoint record, and what a run directory is claimed with.
  std::string identity;

  bool retunes() const { return prune.kind != PruneKind::none && retune.epochs > 0; }
};

// Reads every key of `config` (made with recipe_schema()).
Recipe recipe_from_config(const Config& config);
// The recipe in `file` (TOML) with `overrides` ("key=value") applied: the
// Config's errors for a bad file, key or value.
Recipe recipe_load(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});
// The recipe's own text (Recipe::resolved) with `overrides` ("key=value")
// applied, `source` naming it: an arm of run.compare. The Config's errors
// for a bad override.
Recipe recipe_with_overrides(const Recipe& recipe, const std::string& source,
                             const std::vector<std::string>& overrides);

// "section.key" → the value as written, of a resolved recipe's text
// (Recipe::resolved or Recipe::identity).
std::map<std::string, std::string> recipe_lines(const std::string& text);

// The tuning options a recipe configures (tuning.*, run.seed, retune.mask_update).
TuningOptions recipe_tuning_options(const Recipe& recipe);
// Ω's options (omega.*), without the progress report and the rank's share.
OmegaOptions recipe_omega_options(const Recipe& recipe);

// Whether task.name is a data-to-text task (e2e, webnlg, dart): GPT-2 trained
// as a causal LM and evaluated by decoding and NLG scores.
bool recipe_is_nlg(const Recipe& recipe);
// eval.splits lists "test": the eval stage also decodes task.test_file.
bool recipe_evaluates_test(const Recipe& recipe);

// train.metric_for_best, or the task's main metric (demo: accuracy).
std::string recipe_metric_for_best(const Recipe& recipe);

// The trainer's options for training stage `stage` (Stage::train or
// Stage::retune): epochs, steps, lr (retune.lr, else train.lr), accumulation,
// AdamW (train.weight_decay, decay_exclude_bias_norm, adam_beta1/2,
// adam_epsilon), the schedule and its warm-up, clipping, evaluation, best
// metric and early stopping. dsee::Error when both warm-up keys are set. The
// pipeline adds the run's hooks (metrics file, checkpoints, ranks).
TrainerOptions recipe_trainer_options(const Recipe& recipe, Stage stage);

}  // namespace dsee
