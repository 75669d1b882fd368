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
#include "recipes/pipeline.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "core/counting.h"
#include "core/losses.h"
#include "core/metrics.h"
#include "core/omega_file.h"
#include "core/pretrained_model.h"
#include "core/prune_plan.h"
#include "core/pruning.h"
#include "core/safetensors.h"
#include "core/shape_text.h"
#include "core/trainer.h"
#include "core/tuning.h"
#include "data/distributed_sampler.h"
#include "data/error.h"
#include "recipes/demo_data.h"
#include "recipes/recipe_schema.h"
#include "recipes/task_data.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void write_json_atomic(const fs::path& path, const nlohmann::json& value) {
  const auto temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary);
    out << value.dump(2) << "\n";
    out.close();
    DSEE_CHECK(out.good(), "cannot write '{}'", temporary);
  }
  fs::rename(temporary, path);
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({}); delete it to redo that stage", path.string(), e.what()));
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
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
void run_dir_claim(const fs::path& run_dir, const Config& config) {
  fs::create_directories(run_dir / "stages");
  const auto path = run_dir / "config.toml";
  const std::string text = config.to_toml();
  if (fs::exists(path)) {
    const std::string recorded = read_text(path);
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
  std::ofstream out(path);
  out << text;
  DSEE_CHECK(out.good(), "cannot write '{}'", path.string());
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
  Run(const Config& c, fs::path d) : config(c), dir(std::move(d)) {}
  const Config& config;
  fs::path dir;
  TaskData data;
  std::unique_ptr<PretrainedModel> model;
  std::vector<OmegaEntry> omega;
  std::shared_ptr<ModelTuning> tuning;
  PrunePlan plan;
  nlohmann::json stages = nlohmann::json::object();
};

bool stage_done(Run& run, const std::string& stage) {
  const auto path = run.dir / "stages" / (stage + ".json");
  if (!fs::exists(path)) return false;
  run.stages[stage] = read_json(path);
  spdlog::info("{}: stage {} finished before, skipped", run.dir.filename().string(), stage);
  return true;
}

void stage_record(Run& run, const std::string& stage, nlohmann::json record) {
  write_json_atomic(run.dir / "stages" / (stage + ".json"), record);
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

// Copies saved trainable tensors into the attached tuning's (same names and shapes).
void trainables_load(Run& run, const fs::path& path) {
  const auto file = SafetensorsCheckpoint::open(path);
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
    DSEE_CHECK(file.contains(name), "{}: tensor '{}' is missing; delete the run's stages/ to redo them", path.string(),
               name);
    const auto saved = file.tensor(name);
    DSEE_CHECK(saved.sizes() == tensor.sizes(), "{}: tensor '{}' has shape {}, the run expects {}", path.string(), name,
               shape_text(saved.sizes()), shape_text(tensor.sizes()));
    tensor.copy_(saved);
  }
}

void trainables_save(Run& run, const fs::path& path) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) tensors.emplace_back(name, tensor.detach());
  safetensors_save(path, tensors);
}

// One training stage (train or retune): the trainer over the task's data.
nlohmann::json train_stage(Run& run, const std::string& stage, std::int64_t epochs, double lr) {
  const auto& c = run.config;
  const auto start = Clock::now();
  TrainerOptions options;
  options.epochs = epochs;
  options.max_steps = stage == "train" ? c.get_int("train.max_steps") : 0;
  options.grad_accumulation = c.get_int("train.grad_accumulation");
  options.lr = lr;
  options.adamw.weight_decay = c.get_float("train.weight_decay");
  options.schedule.kind = lr_schedule_kind_from_name(c.get_string("train.schedule"));
  options.schedule.warmup_ratio = c.get_float("train.warmup_ratio");
  options.max_grad_norm = c.get_float("train.max_grad_norm");
  options.skip_nonfinite = c.get_bool("train.skip_nonfinite");
  options.eval_every = c.get_int("train.eval_every");
  options.early_stopping_patience = c.get_int("train.early_stopping_patience");
  if (options.early_stopping_patience > 0) options.metric_for_best = task_main_metric(run.data.task);
  options.metrics_path = run.dir / "metrics.jsonl";
  const auto micro_batch = c.get_int("train.batch_size") / options.grad_accumulation;
  DSEE_CHECK(micro_batch >= 1 && micro_batch * options.grad_accumulation == c.get_int("train.batch_size"),
             "train.batch_size ({}) must be a multiple of train.grad_accumulation ({})", c.get_int("train.batch_size"),
             options.grad_accumulation);
  TaskBatches batches(run.data.train, micro_batch,
                      static_cast<std::uint64_t>(c.get_int("run.seed")) + (stage == "train" ? 0 : 1));
  at::manual_seed(static_cast<std::uint64_t>(c.get_int("run.seed")));  // dropout
  Trainer trainer(run.tuning->trainable_parameters(), options);
  auto* model = run.model.get();
  auto* tuning = run.tuning.get();
  const auto loss = [&](const TrainBatch& batch) {
    tuning->set_training(true);
    return task_loss(*model, batch);
  };
  const auto evaluate = [&] { return task_evaluate(*model, tuning, run.data); };
  spdlog::info("{}: {} ({} epochs, lr {})", run.dir.filename().string(), stage, epochs, lr);
  const auto result = trainer.run(batches, loss, evaluate);
  trainables_save(run, run.dir / fmt::format("trainable-{}.safetensors", stage));
  nlohmann::json record = counts_of(run);
  record["dev"] = evaluate();
  record["steps"] = result.steps;
  record["skipped_steps"] = result.skipped_steps;
  record["seconds"] = seconds_since(start);
  return record;
}

// One arm of the recipe in `dir`, data in `data_dir`.
nlohmann::json run_arm(const Config& config, const fs::path& dir, const fs::path& data_dir) {
  const auto start = Clock::now();
  Run run(config, dir);
  run_dir_claim(dir, config);
  const auto method = tuning_method_from_name(config.get_string("tuning.method"));
  const auto prune_kind = config.get_string("prune.kind");

  // data + model
  run.data = task_data_prepare(config, demo_options_of(config), data_dir);
  const auto model_path =
      config.get_string("model.path").empty() ? run.data.pretrained_dir : fs::path(config.get_string("model.path"));
  ModelLoadOptions load;
  load.task = ModelTask::sequence_classification;
  if (run.data.task != "demo") {  // a new head of the task's size, seeded by the run
    load.num_labels = run.data.num_labels;
    load.head_seed = static_cast<std::uint64_t>(config.get_int("run.seed"));
  }
  run.model = model_load(model_path, load);

  // omega
  if (method == TuningMethod::dsee) {
    const auto options = tuning_options_of(config);
    const auto matrices =
        adapted_matrices(*run.model, options.target_modules.empty() ? default_target_modules(run.model->config().family)
                                                                    : options.target_modules);
    if (stage_done(run, "omega")) {
      std::vector<OmegaExpected> expected;
      for (const auto& m : matrices) expected.push_back({m.name, m.rows, m.cols()});
      run.omega = omega_read(dir / "omega.h5", expected);
    } else {
      const auto t = Clock::now();
      std::vector<NamedMatrix> named;
      for (const auto& m : matrices) named.push_back({m.name, m.weight()});
      const auto omega_options = omega_options_of(config);
      run.omega = omega_select(named, omega_options);
      omega_write(dir / "omega.h5", run.omega,
                  {omega_method_name(omega_options.method), grebsmo_variant_name(omega_options.grebsmo.variant),
                   omega_options.seed, omega_options.c});
      stage_record(run, "omega", {{"matrices", run.omega.size()}, {"seconds", seconds_since(t)}});
    }
  }
  run.tuning = tuning_attach(*run.model, tuning_options_of(config), run.omega);
  nlohmann::json pretrained = counts_of(run);
  pretrained["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data);
  run.stages["pretrained"] = pretrained;

  // train
  if (stage_done(run, "train"))
    trainables_load(run, dir / "trainable-train.safetensors");
  else
    stage_record(run, "train", train_stage(run, "train", config.get_int("train.epochs"), config.get_float("train.lr")));

  // prune + retune
  if (prune_kind != "none") {
    if (stage_done(run, "prune")) {
      run.plan = prune_plan_read(dir / "masks.h5");
      prune_plan_apply(*run.model, run.plan);
    } else {
      const auto t = Clock::now();
      run.plan = prune_kind == "heads"
                     ? structured_plan(*run.model, run.tuning.get(), config.get_int("prune.heads_per_layer"))
                     : unstructured_plan(*run.model, run.tuning.get(),
                                         {config.get_float("prune.p_adapt"), config.get_float("prune.p_rest")});
      prune_plan_write(dir / "masks.h5", run.plan);
      prune_plan_apply(*run.model, run.plan);
      nlohmann::json record = counts_of(run);
      record["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data);
      record["seconds"] = seconds_since(t);
      stage_record(run, "prune", record);
    }
    if (config.get_int("retune.epochs") > 0) {
      if (stage_done(run, "retune"))
        trainables_load(run, dir / "trainable-retune.safetensors");
      else
        stage_record(run, "retune",
                     train_stage(run, "retune", config.get_int("retune.epochs"),
                                 config.get_float("retune.lr") > 0 ? config.get_float("retune.lr")
                                                                   : config.get_float("train.lr")));
    }
  }

  // eval
  nlohmann::json final_record = counts_of(run);
  final_record["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data);
  task_write_predictions(*run.model, run.tuning.get(), run.data, dir / "predictions-dev.safetensors");
  stage_record(run, "eval", final_record);

  // export
  if (config.get_string("export.format") == "hf") {
    model_merge(*run.model);
    model_save(*run.model, dir / "export");
    stage_record(run, "export", {{"format", "hf"}, {"path", (dir / "export").string()}});
  }

  nlohmann::json summary = {{"method", config.get_string("tuning.method")},
                            {"prune", prune_kind},
                            {"trainable_parameters", final_record["trainable_parameters"]},
                            {"nonzero_parameters", final_record["nonzero_parameters"]},
                            {"flops_dense", final_record["flops_dense"]},
                            {"flops_nonzero", final_record["flops_nonzero"]},
                            {"dev", final_record["dev"]},
                            {"stages", run.stages},
                            {"seconds", seconds_since(start)}};
  write_json_atomic(dir / "summary.json", summary);
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

nlohmann::json pipeline_run(const Config& config) {
  const fs::path dir = fs::path(config.get_string("run.out_dir")) / config.get_string("run.name");
  const auto data_dir = dir / "data";
  const auto& compare = config.get_strings("run.compare");
  if (compare.empty()) return run_arm(config, dir, data_dir);

  run_dir_claim(dir, config);
  std::vector<std::pair<std::string, nlohmann::json>> arms;
  for (const auto& text : compare) {
    const auto arm = compare_arm_parse(text);
    auto overrides = arm.overrides;
    overrides.push_back("run.compare=[]");
    const Config arm_config =
        Config::parse(recipe_schema(), config.to_toml(), config.source() + " arm " + arm.name, overrides);
    arms.emplace_back(arm.name, run_arm(arm_config, dir / arm.name, data_dir));
  }
  print_compare_table(arms);
  nlohmann::json summary = {{"arms", nlohmann::json::array()}};
  for (const auto& [name, s] : arms) summary["arms"].push_back({{"name", name}, {"summary", s}});
  write_json_atomic(dir / "summary.json", summary);
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
