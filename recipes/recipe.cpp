// The typed recipe: see recipe.h. The one file that reads recipe keys.
#include "recipes/recipe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <iterator>
#include <sstream>

#include "base/enum_names.h"
#include "base/error.h"
#include "recipes/recipe_schema.h"
#include "recipes/task_data.h"

namespace dsee {
namespace {

// The position of `name` among kStages; std::size(kStages) when it is none.
std::size_t stage_order(const std::string& name) {
  const auto* it =
      std::find_if(std::begin(kStages), std::end(kStages), [&](Stage stage) { return name == stage_name(stage); });
  return static_cast<std::size_t>(it - std::begin(kStages));
}

// run.stages: known names, each once, in pipeline order.
std::vector<Stage> stages_of(const std::vector<std::string>& names) {
  std::vector<std::string> all;
  for (const Stage stage : kStages) all.emplace_back(stage_name(stage));
  std::vector<Stage> out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i];
    DSEE_CHECK(stage_order(name) < std::size(kStages), "run.stages: '{}' is not a stage; the stages are {}", name,
               fmt::join(all, ", "));
    DSEE_CHECK(i == 0 || stage_order(names[i - 1]) < stage_order(name),
               "run.stages: '{}' comes after '{}'; list each stage once, in pipeline order ({})", name, names[i - 1],
               fmt::join(all, ", "));
    out.push_back(kStages[stage_order(name)]);
  }
  return out;
}

// eval.splits: "dev" first, then optionally "test", which only the
// data-to-text tasks have.
std::vector<std::string> eval_splits_of(const std::vector<std::string>& names, const std::string& task) {
  const bool nlg = task == "e2e" || task == "webnlg" || task == "dart";
  const bool dev_then_test =
      !names.empty() && names.front() == "dev" && (names.size() == 1 || (names.size() == 2 && names.back() == "test"));
  DSEE_CHECK(dev_then_test,
             "eval.splits = [{}]: give [\"dev\"] or [\"dev\", \"test\"] (the eval stage always scores the dev split, "
             "which summary.json and the tables read; \"test\" also decodes task.test_file)",
             fmt::join(names, ", "));
  DSEE_CHECK(names.size() == 1 || nlg,
             "eval.splits lists \"test\", which task.name = {} has not: a test split is decoded for the "
             "data-to-text tasks (e2e, webnlg, dart) only; use [\"dev\"]",
             task);
  return names;
}

// `text` (Config::to_toml) without the line of `key` in `table`.
std::string without_key(const std::string& text, const std::string& table, const std::string& key) {
  std::istringstream in(text);
  std::string out, line, current;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == '[') current = line.substr(1, line.size() - 2);
    if (current == table && line.starts_with(key + " = ")) continue;
    out += line + "\n";
  }
  return out;
}

// The recipe's closed sets by name (the schema has checked every name before
// these tables see it).
constexpr EnumName<Stage> kStageNames[] = {{Stage::omega, "omega"}, {Stage::train, "train"},
                                           {Stage::prune, "prune"}, {Stage::retune, "retune"},
                                           {Stage::eval, "eval"},   {Stage::export_, "export"}};
constexpr EnumName<DeviceRequest> kDevices[] = {
    {DeviceRequest::cpu, "cpu"}, {DeviceRequest::cuda, "cuda"}, {DeviceRequest::automatic, "auto"}};
constexpr EnumName<Precision> kPrecisions[] = {{Precision::fp32, "fp32"}, {Precision::bf16, "bf16"}};
constexpr EnumName<PruneKind> kPruneKinds[] = {{PruneKind::none, "none"},
                                               {PruneKind::unstructured, "unstructured"},
                                               {PruneKind::heads, "heads"},
                                               {PruneKind::imp, "imp"},
                                               {PruneKind::earlybert, "earlybert"}};
constexpr EnumName<ExportFormat> kExportFormats[] = {{ExportFormat::hf, "hf"}, {ExportFormat::peft, "peft"}};
constexpr EnumName<BackendRequest> kBackends[] = {
    {BackendRequest::mpi, "mpi"}, {BackendRequest::nccl, "nccl"}, {BackendRequest::automatic, "auto"}};

DeviceRequest device_request_of(const std::string& name) {
  return enum_from_name(kDevices, name).value_or(DeviceRequest::automatic);
}

PruneKind prune_kind_of(const std::string& name) { return enum_from_name(kPruneKinds, name).value_or(PruneKind::none); }

BackendRequest backend_request_of(const std::string& name) {
  return enum_from_name(kBackends, name).value_or(BackendRequest::automatic);
}

}  // namespace

const char* stage_name(Stage stage) { return enum_name(kStageNames, stage); }

const char* device_request_name(DeviceRequest device) { return enum_name(kDevices, device); }

const char* precision_name(Precision precision) { return enum_name(kPrecisions, precision); }

const char* prune_kind_name(PruneKind kind) { return enum_name(kPruneKinds, kind); }

const char* export_format_name(ExportFormat format) { return enum_name(kExportFormats, format); }

const char* backend_request_name(BackendRequest backend) { return enum_name(kBackends, backend); }

ExportFormat export_format_from_name(const std::string& name) {
  if (const auto format = enum_from_name(kExportFormats, name)) return *format;
  throw Error(fmt::format("export format '{}' is not known; use hf or peft", name));
}

Recipe recipe_from_config(const Config& c) {
  Recipe r;
  r.run.name = c.get_string("run.name");
  r.run.out_dir = c.get_string("run.out_dir");
  r.run.seed = c.get_int("run.seed");
  r.run.device = device_request_of(c.get_string("run.device"));
  r.run.precision = enum_from_name(kPrecisions, c.get_string("run.precision")).value_or(Precision::fp32);
  r.run.checkpoint_on_signal = c.get_bool("run.checkpoint_on_signal");
  r.run.stages = stages_of(c.get_strings("run.stages"));
  r.run.compare = c.get_strings("run.compare");
  r.run.compare_seeds = c.get_int("run.compare_seeds");
  r.run.lock = c.get_bool("run.lock");
  r.model.path = c.get_string("model.path");
  r.task.name = c.get_string("task.name");
  r.task.data_dir = c.get_string("task.data_dir");
  r.task.train_file = c.get_string("task.train_file");
  r.task.dev_file = c.get_string("task.dev_file");
  r.task.test_file = c.get_string("task.test_file");
  r.task.format = c.get_string("task.format");
  r.task.max_seq_length = c.get_int("task.max_seq_length");
  r.task.train_size = c.get_int("task.train_size");
  r.task.dev_size = c.get_int("task.dev_size");
  r.task.teacher_rank = c.get_int("task.teacher_rank");
  r.task.teacher_lowrank_std = c.get_float("task.teacher_lowrank_std");
  r.task.teacher_sparse_scale = c.get_float("task.teacher_sparse_scale");
  r.task.teacher_margin = c.get_float("task.teacher_margin");
  r.tuning.method = tuning_method_from_name(c.get_string("tuning.method"));
  r.tuning.rank = c.get_int("tuning.rank");
  r.tuning.top_layers = c.get_int("tuning.top_layers");
  r.tuning.adapter_size = c.get_int("tuning.adapter_size");
  r.tuning.adapter_activation = c.get_string("tuning.adapter_activation");
  r.tuning.adapter_train_layernorm = c.get_bool("tuning.adapter_train_layernorm");
  r.tuning.prefix_length = c.get_int("tuning.prefix_length");
  r.tuning.prefix_projection = c.get_bool("tuning.prefix_projection");
  r.tuning.prefix_hidden = c.get_int("tuning.prefix_hidden");
  r.tuning.prefix_init = c.get_string("tuning.prefix_init");
  r.tuning.alpha = c.get_float("tuning.alpha");
  r.tuning.dropout = c.get_float("tuning.dropout");
  r.tuning.target_modules = c.get_strings("tuning.target_modules");
  r.tuning.init_from = c.get_string("tuning.init_from");
  r.omega.c = c.get_int("omega.c");
  r.omega.method = omega_method_from_name(c.get_string("omega.method"));
  r.omega.variant = grebsmo_variant_from_name(c.get_string("omega.variant"));
  r.omega.max_rank = c.get_int("omega.max_rank");
  r.omega.tol = c.get_float("omega.tol");
  r.omega.seed = c.get_int("omega.seed");
  r.omega.workers = c.get_int("omega.workers");
  r.omega.split_across_ranks = c.get_bool("omega.split_across_ranks");
  r.omega.gradient_steps = c.get_int("omega.gradient_steps");
  r.omega.gradient_warmup_steps = c.get_int("omega.gradient_warmup_steps");
  DSEE_CHECK(r.omega.method != OmegaMethod::gradient || r.tuning.method == TuningMethod::dsee,
             "omega.method = gradient chooses Ω of tuning.method = dsee from the task's gradients; tuning.method is "
             "{}: set tuning.method = \"dsee\" or leave omega.method at grebsmo",
             tuning_method_name(r.tuning.method));
  r.train.lr = c.get_float("train.lr");
  r.train.epochs = c.get_int("train.epochs");
  r.train.max_steps = c.get_int("train.max_steps");
  r.train.batch_size = c.get_int("train.batch_size");
  r.train.grad_accumulation = c.get_int("train.grad_accumulation");
  r.train.weight_decay = c.get_float("train.weight_decay");
  r.train.decay_exclude_bias_norm = c.get_bool("train.decay_exclude_bias_norm");
  r.train.adam_beta1 = c.get_float("train.adam_beta1");
  r.train.adam_beta2 = c.get_float("train.adam_beta2");
  r.train.adam_epsilon = c.get_float("train.adam_epsilon");
  r.train.schedule = lr_schedule_kind_from_name(c.get_string("train.schedule"));
  r.train.warmup_ratio = c.get_float("train.warmup_ratio");
  r.train.warmup_steps = c.get_int("train.warmup_steps");
  r.train.max_grad_norm = c.get_float("train.max_grad_norm");
  r.train.eval_every = c.get_int("train.eval_every");
  r.train.skip_nonfinite = c.get_bool("train.skip_nonfinite");
  r.train.early_stopping_patience = c.get_int("train.early_stopping_patience");
  r.train.metric_for_best = c.get_string("train.metric_for_best");
  r.train.greater_is_better = c.get_bool("train.greater_is_better");
  r.train.load_best_at_end = c.get_bool("train.load_best_at_end");
  r.train.label_smoothing = c.get_float("train.label_smoothing");
  r.train.length_buckets = c.get_bool("train.length_buckets");
  r.prune.kind = prune_kind_of(c.get_string("prune.kind"));
  r.prune.criterion = prune_criterion_from_name(c.get_string("prune.criterion"));
  r.prune.p_adapt = c.get_float("prune.p_adapt");
  r.prune.p_rest = c.get_float("prune.p_rest");
  r.prune.heads_per_layer = c.get_int("prune.heads_per_layer");
  r.prune.neurons_per_layer = c.get_int("prune.neurons_per_layer");
  r.prune.search_steps = c.get_int("prune.search_steps");
  r.prune.l1 = c.get_float("prune.l1");
  r.prune.sparsity = c.get_float("prune.sparsity");
  r.prune.imp_rounds = c.get_int("prune.imp_rounds");
  r.retune.epochs = c.get_int("retune.epochs");
  r.retune.lr = c.get_float("retune.lr");
  r.retune.mask_update = c.get_bool("retune.mask_update");
  r.eval.batch_size = c.get_int("eval.batch_size");
  r.eval.beam_size = c.get_int("eval.beam_size");
  r.eval.length_penalty = c.get_float("eval.length_penalty");
  r.eval.no_repeat_ngram_size = c.get_int("eval.no_repeat_ngram_size");
  r.eval.max_new_tokens = c.get_int("eval.max_new_tokens");
  r.eval.max_items = c.get_int("eval.max_items");
  r.eval.splits = eval_splits_of(c.get_strings("eval.splits"), r.task.name);
  if (c.get_string("export.format") != "none")
    r.export_.format = export_format_from_name(c.get_string("export.format"));
  r.ckpt.keep_last = c.get_int("ckpt.keep_last");
  r.ckpt.every = c.get_int("ckpt.every");
  r.dist.timeout_s = c.get_float("dist.timeout_s");
  r.dist.root_timeout_s = c.get_float("dist.root_timeout_s");
  r.dist.backend = backend_request_of(c.get_string("dist.backend"));
  r.dist.fingerprint_every = c.get_int("dist.fingerprint_every");
  r.source = c.source();
  r.resolved = c.to_toml();
  // run.stages at its default rather than left out, as config.toml has always recorded it.
  r.identity =
      without_key(Config::parse(recipe_schema(), r.resolved, r.source, {"run.stages=[]"}).to_toml(), "run", "lock");
  return r;
}

Recipe recipe_load(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  return recipe_from_config(Config::load(recipe_schema(), file, overrides));
}

std::map<std::string, std::string> recipe_lines(const std::string& text) {
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

Recipe recipe_with_overrides(const Recipe& recipe, const std::string& source,
                             const std::vector<std::string>& overrides) {
  return recipe_from_config(Config::parse(recipe_schema(), recipe.resolved, source, overrides));
}

TuningOptions recipe_tuning_options(const Recipe& r) {
  TuningOptions o;
  o.method = r.tuning.method;
  o.rank = r.tuning.rank;
  o.top_layers = r.tuning.top_layers;
  o.adapter_size = r.tuning.adapter_size;
  const auto& activation = r.tuning.adapter_activation;  // the schema allows gelu, gelu_new, relu
  o.adapter_activation = activation == "relu"       ? Activation::relu
                         : activation == "gelu_new" ? Activation::gelu_new
                                                    : Activation::gelu;
  o.adapter_train_layernorm = r.tuning.adapter_train_layernorm;
  o.prefix_length = r.tuning.prefix_length;
  o.prefix_projection = r.tuning.prefix_projection;
  o.prefix_hidden = r.tuning.prefix_hidden;
  o.prefix_init_zero = r.tuning.prefix_init == "zero";  // the schema allows normal, zero
  o.alpha = r.tuning.alpha;
  o.dropout = r.tuning.dropout;
  o.target_modules = r.tuning.target_modules;
  o.seed = static_cast<std::uint64_t>(r.run.seed);
  o.mask_update = r.retune.mask_update;
  return o;
}

OmegaOptions recipe_omega_options(const Recipe& r) {
  OmegaOptions o;
  o.method = r.omega.method;
  o.c = r.omega.c;
  o.seed = static_cast<std::uint64_t>(r.omega.seed);
  o.grebsmo = grebsmo_default_options(r.omega.variant);
  if (r.omega.max_rank > 0) o.grebsmo.max_rank = r.omega.max_rank;
  o.grebsmo.tol = r.omega.tol;
  o.workers = static_cast<int>(r.omega.workers);
  return o;
}

std::string recipe_metric_for_best(const Recipe& r) {
  return r.train.metric_for_best.empty() ? task_main_metric(r.task.name) : r.train.metric_for_best;
}

bool recipe_is_nlg(const Recipe& recipe) {
  return recipe.task.name == "e2e" || recipe.task.name == "webnlg" || recipe.task.name == "dart";
}

bool recipe_evaluates_test(const Recipe& recipe) {
  return std::find(recipe.eval.splits.begin(), recipe.eval.splits.end(), "test") != recipe.eval.splits.end();
}

TrainerOptions recipe_trainer_options(const Recipe& r, Stage stage) {
  DSEE_ASSERT(stage == Stage::train || stage == Stage::retune, "no training stage '{}'", stage_name(stage));
  TrainerOptions options;
  const bool train = stage == Stage::train;
  options.epochs = train ? r.train.epochs : r.retune.epochs;
  options.max_steps = train ? r.train.max_steps : 0;
  options.lr = !train && r.retune.lr > 0 ? r.retune.lr : r.train.lr;
  options.grad_accumulation = r.train.grad_accumulation;
  options.adamw.weight_decay = r.train.weight_decay;
  options.adamw.exclude_bias_and_norm = r.train.decay_exclude_bias_norm;
  options.adamw.beta1 = r.train.adam_beta1;
  options.adamw.beta2 = r.train.adam_beta2;
  options.adamw.eps = r.train.adam_epsilon;
  options.schedule.kind = r.train.schedule;
  options.schedule.warmup_ratio = r.train.warmup_ratio;
  options.schedule.warmup_steps = r.train.warmup_steps;
  DSEE_CHECK(options.schedule.warmup_ratio == 0 || options.schedule.warmup_steps == 0,
             "train.warmup_ratio ({}) and train.warmup_steps ({}) are both set; give the warm-up one way",
             options.schedule.warmup_ratio, options.schedule.warmup_steps);
  options.max_grad_norm = r.train.max_grad_norm;
  options.skip_nonfinite = r.train.skip_nonfinite;
  options.eval_every = r.train.eval_every;
  options.early_stopping_patience = r.train.early_stopping_patience;
  options.metric_for_best = recipe_metric_for_best(r);
  options.greater_is_better = r.train.greater_is_better;
  options.causal_lm = recipe_is_nlg(r);
  DSEE_CHECK(options.causal_lm || r.train.label_smoothing == 0,
             "train.label_smoothing = {} applies to the data-to-text tasks (e2e, webnlg, dart) only; task.name is {}",
             r.train.label_smoothing, r.task.name);
  options.label_smoothing = r.train.label_smoothing;
  return options;
}

}  // namespace dsee
