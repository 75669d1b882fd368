// The pipeline's task data: see task_data.h.
//
// Note [One shape for every task]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The stages (train, prune, retune, eval) take a TaskData and never ask which
// task it is: a split is a map of named tensors whose rows are examples, the
// batch source slices every tensor of the map with the same indices, and the
// model input takes whichever of attention_mask/token_type_ids the split has.
// So the demo (ids and labels only, no padding) and GLUE (padded pairs with
// masks and token types) go through the same code, and a new task only has
// to produce the map.
#include "recipes/task_data.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "core/train/losses.h"
#include "core/train/metrics.h"
#include "data/glue.h"
#include "data/tokenizer.h"
#include "distributed/coordinator.h"

namespace dsee {
namespace fs = std::filesystem;

namespace {

TaskSplit split_of(std::string name, const GlueTensors& t) {
  TaskSplit split;
  split.name = std::move(name);
  split.tensors["input_ids"] = t.input_ids;
  split.tensors["attention_mask"] = t.attention_mask;
  if (t.token_type_ids.defined()) split.tensors["token_type_ids"] = t.token_type_ids;
  split.tensors["labels"] = t.labels;
  return split;
}

TaskData glue_prepare(const Recipe& recipe) {
  const auto& spec = glue_file_spec(recipe.task.name);
  const fs::path model_path = recipe.model.path;
  const fs::path data_dir = recipe.task.data_dir;
  DSEE_CHECK(!model_path.empty(),
             "task.name = {} needs model.path: a Hugging Face model folder (config.json, model.safetensors and the "
             "tokenizer files, e.g. bert-base-uncased)",
             spec.name);
  DSEE_CHECK(!data_dir.empty(), "task.name = {} needs task.data_dir: the GLUE folder of the task (train.tsv, {})",
             spec.name, fmt::join(spec.dev_files, ", "));
  const auto max_seq_length = recipe.task.max_seq_length;
  const auto tokenizer = Tokenizer::load(model_path);

  TaskData data;
  data.task = spec.name;
  data.pretrained_dir = model_path;
  data.num_labels = spec.num_labels;
  data.regression = spec.num_labels == 1;
  const auto read = [&](const std::string& file) {
    return glue_encode(tokenizer, glue_read(spec.name, data_dir / file), max_seq_length);
  };
  data.train = split_of("train", read("train.tsv"));
  for (const auto& file : spec.dev_files) data.dev.push_back(split_of(fs::path(file).stem().string(), read(file)));
  spdlog::info("{}: {} training and {} dev examples from {} (tokenizer: {}; longest {} tokens)", spec.name,
               data.train.size(), data.dev.front().size(), data_dir.string(), tokenizer.describe(), data.seq_len());
  return data;
}

TaskData demo_of(DemoData demo) {
  TaskData data;
  data.task = "demo";
  data.pretrained_dir = demo.pretrained_dir;
  data.train.name = "train";
  data.train.tensors = {{"input_ids", demo.train_ids}, {"labels", demo.train_labels}};
  TaskSplit dev;
  dev.name = "dev";
  dev.tensors = {{"input_ids", demo.dev_ids}, {"labels", demo.dev_labels}};
  data.dev.push_back(std::move(dev));
  return data;
}

// Logits of rows [begin, end) of the split, fp32 on the CPU, in batches of
// `batch` from `begin`.
at::Tensor logits_of(PretrainedModel& model, const TaskSplit& split, std::int64_t begin, std::int64_t end,
                     std::int64_t num_labels, std::int64_t batch) {
  std::vector<at::Tensor> logits = {at::empty({0, num_labels}, at::kFloat)};
  for (std::int64_t start = begin; start < end; start += batch) {
    std::map<std::string, at::Tensor> rows;
    for (const auto& [name, tensor] : split.tensors)
      if (name != "labels")
        rows[name] = tensor.narrow(0, start, std::min<std::int64_t>(batch, end - start)).to(model.device());
    logits.push_back(model.forward(task_model_input(rows)).logits.to(at::kCPU, at::kFloat));
  }
  return at::cat(logits);
}

}  // namespace

TaskData task_data_prepare(const Recipe& recipe, const DemoOptions& demo, const fs::path& demo_dir) {
  TaskData data = recipe.task.name == "demo" ? demo_of(demo_prepare(demo, demo_dir)) : glue_prepare(recipe);
  data.eval_batch_size = recipe.eval.batch_size;
  return data;
}

std::string task_main_metric(const std::string& task_name) {
  if (task_name == "demo") return "accuracy";
  return glue_task_info(glue_task_from_name(task_name)).main_metric;
}

std::vector<std::string> task_metric_names(const std::string& task_name) {
  if (task_name == "demo") return {"accuracy"};
  const auto task = glue_task_from_name(task_name);
  auto names = glue_task_info(task).metrics;
  if (task == GlueTask::mnli)
    for (const auto& metric : glue_task_info(task).metrics) names.push_back(metric + "_mismatched");
  return names;
}

TaskBatches::TaskBatches(const TaskSplit& split, std::int64_t global_batch_size, std::uint64_t seed, int rank,
                         int world_size)
    : tensors_(split.tensors),
      world_size_(world_size),
      global_batch_(global_batch_size),
      sampler_({split.size(), global_batch_size, seed, true, false}, rank, world_size) {}

void TaskBatches::seek(std::int64_t epoch, std::int64_t sample_index) {
  sampler_.set_position({epoch, sample_index});
  left_ = sampler_.batches_per_epoch() - (sample_index + global_batch_ - 1) / global_batch_;
}

std::int64_t TaskBatches::batches_per_epoch() const { return sampler_.batches_per_epoch(); }

void TaskBatches::start_epoch(std::int64_t epoch) {
  sampler_.set_position({epoch, 0});
  left_ = sampler_.batches_per_epoch();
}

std::optional<TrainBatch> TaskBatches::next() {
  if (left_ <= 0) return std::nullopt;
  --left_;
  const auto batch = sampler_.next();
  loss_scale_ = static_cast<double>(batch.indices.size()) * world_size_ / static_cast<double>(batch.global_size);
  const auto index = at::tensor(batch.indices, at::kLong);
  TrainBatch out;
  for (const auto& [name, tensor] : tensors_) out.tensors[name] = tensor.index_select(0, index);
  out.samples = index.size(0);
  return out;
}

ModelInput task_model_input(const std::map<std::string, at::Tensor>& tensors) {
  ModelInput input;
  input.input_ids = tensors.at("input_ids");
  if (const auto it = tensors.find("attention_mask"); it != tensors.end()) input.attention_mask = it->second;
  if (const auto it = tensors.find("token_type_ids"); it != tensors.end()) input.token_type_ids = it->second;
  return input;
}

at::Tensor task_loss(PretrainedModel& model, const TrainBatch& batch) {
  std::map<std::string, at::Tensor> on_device;  // the batch where the model is (a no-op on the CPU)
  for (const auto& [name, tensor] : batch.tensors) on_device[name] = tensor.to(model.device());
  return sequence_classification_loss(model.forward(task_model_input(on_device)).logits, on_device.at("labels"));
}

std::vector<at::Tensor> task_dev_logits(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                        Communicator* comm) {
  DSEE_CHECK(data.eval_batch_size >= 1, "eval.batch_size = {}: give at least 1", data.eval_batch_size);
  at::NoGradGuard no_grad;
  if (tuning) tuning->set_training(false);
  std::vector<at::Tensor> out;
  for (const auto& split : data.dev) {
    const auto batch = data.eval_batch_size;
    if (comm == nullptr) {
      out.push_back(logits_of(model, split, 0, split.size(), data.num_labels, batch));
      continue;
    }
    const auto [begin, end] = batch_shard_range(split.size(), batch, comm->rank(), comm->world_size());
    const at::Tensor mine = logits_of(model, split, begin, end, data.num_labels, batch).contiguous();
    out.push_back(all_gather_rows(*comm, mine.to(comm->device())).cpu());
  }
  return out;
}

std::map<std::string, double> task_metrics(const TaskData& data, const std::vector<at::Tensor>& logits) {
  DSEE_ASSERT(logits.size() == data.dev.size(), "{} logits for {} dev splits", logits.size(), data.dev.size());
  std::map<std::string, double> out;
  for (std::size_t i = 0; i < data.dev.size(); ++i) {
    const auto labels = data.dev[i].tensors.at("labels").to(at::kCPU);
    std::map<std::string, double> metrics;
    if (data.task == "demo") {
      const auto predictions = logits[i].argmax(1).contiguous();
      const auto truth = labels.contiguous();
      metrics["accuracy"] =
          accuracy({predictions.data_ptr<std::int64_t>(), static_cast<std::size_t>(predictions.numel())},
                   {truth.data_ptr<std::int64_t>(), static_cast<std::size_t>(truth.numel())});
    } else {
      metrics = glue_metrics(glue_task_from_name(data.task), logits[i], labels);
    }
    for (const auto& [name, value] : metrics) out[i == 0 ? name : name + "_mismatched"] = value;
  }
  return out;
}

std::map<std::string, double> task_evaluate(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                            Communicator* comm) {
  return task_metrics(data, task_dev_logits(model, tuning, data, comm));
}

void task_write_predictions(const TaskData& data, const std::vector<at::Tensor>& logits, const fs::path& path) {
  DSEE_ASSERT(logits.size() == data.dev.size(), "{} logits for {} dev splits", logits.size(), data.dev.size());
  NamedTensors tensors;
  for (std::size_t i = 0; i < data.dev.size(); ++i) {
    const auto& split = data.dev[i];
    tensors.emplace_back(split.name + ".logits", logits[i].contiguous());
    tensors.emplace_back(split.name + ".labels", split.tensors.at("labels").to(at::kCPU).contiguous());
  }
  safetensors_save(path, tensors);
}

}  // namespace dsee
