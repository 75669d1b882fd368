// The task a recipe trains on, whatever it is: the built-in demo or a GLUE
// task read from task.data_dir (data/glue.h). The pipeline's stages see only
// this: tensors for the training split and each dev split, the head's size,
// whether the task is a regression, and how to score it.
//
//   TaskSplit::tensors   input_ids [n, seq] int64, labels [n] (int64, or
//                        float32 for regression), and where the task has
//                        them attention_mask and token_type_ids [n, seq]
//   TaskData::dev        the dev splits; MNLI: matched, then mismatched
//
// Metrics (task_evaluate): the demo reports accuracy; GLUE tasks their own
// (docs/models.md, 'Tasks'; core/train/metrics.h); MNLI's mismatched split
// adds its metrics with the suffix "_mismatched" ("accuracy" is the matched
// one).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/model/pretrained_model.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "data/distributed_sampler.h"
#include "distributed/communicator.h"
#include "recipes/demo_data.h"
#include "recipes/recipe.h"

namespace dsee {

struct TaskSplit {
  std::string name;  // "train", "dev", "dev_matched", "dev_mismatched"
  std::map<std::string, at::Tensor> tensors;
  std::int64_t size() const { return tensors.at("labels").size(0); }
};

struct TaskData {
  std::string task;                      // "demo" or the canonical GLUE name ("sst2", "stsb", ...)
  std::filesystem::path pretrained_dir;  // the demo's generated model, or model.path
  TaskSplit train;
  std::vector<TaskSplit> dev;
  std::int64_t num_labels = 2;  // 1: regression (STS-B, MSE loss)
  bool regression = false;
  std::int64_t eval_batch_size = 256;  // eval.batch_size: dev rows per forward pass
  std::int64_t seq_len() const { return train.tensors.at("input_ids").size(1); }
};

// The task of `recipe` (task.name, task.data_dir, task.max_seq_length,
// model.path, eval.batch_size): the demo is prepared in demo_dir with
// `demo`; a GLUE task is read from task.data_dir and encoded with
// model.path's tokenizer. dsee::Error naming the key or file when something
// is missing.
TaskData task_data_prepare(const Recipe& recipe, const DemoOptions& demo, const std::filesystem::path& demo_dir);

// The metric that ranks checkpoints (early stopping, best dev): "accuracy"
// for the demo, GlueTaskInfo::main_metric for GLUE (CoLA mcc, MRPC/QQP f1,
// STS-B pearson, MNLI matched accuracy). dsee::Error for an unknown task.
std::string task_main_metric(const std::string& task_name);
// Every metric task_evaluate reports for the task, in order.
std::vector<std::string> task_metric_names(const std::string& task_name);

// Micro-batches of a split's tensors (all of them), rows in the sampler's
// order: shuffled per epoch from seed, the last partial batch kept; rank
// `rank` of `world_size` gets its share of each global batch.
class TaskBatches final : public BatchSource {
 public:
  TaskBatches(const TaskSplit& split, std::int64_t global_batch_size, std::uint64_t seed, int rank = 0,
              int world_size = 1);
  std::int64_t batches_per_epoch() const override;
  void start_epoch(std::int64_t epoch) override;
  std::optional<TrainBatch> next() override;
  std::int64_t sample_index() const override { return sampler_.position().sample; }
  void seek(std::int64_t epoch, std::int64_t sample_index) override;
  // For the batch next() returned last: local mean loss × this = the piece's
  // share, such that the mean over ranks is the global mean (see
  // data/distributed_sampler.h); 1 on one rank.
  double loss_scale() const { return loss_scale_; }
  DistributedSampler& sampler() { return sampler_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  int world_size_;
  std::int64_t global_batch_;  // samples of all ranks' pieces together
  DistributedSampler sampler_;
  std::int64_t left_ = 0;
  double loss_scale_ = 1.0;
};

// The model's inputs from a batch's tensors (input_ids and, when present,
// attention_mask and token_type_ids).
ModelInput task_model_input(const std::map<std::string, at::Tensor>& tensors);

// Cross-entropy, or MSE on the single output for regression, of a batch
// (CPU tensors; copied to the model's device).
at::Tensor task_loss(PretrainedModel& model, const TrainBatch& batch);

// The model's dev logits, one [n, num_labels] fp32 CPU tensor per dev
// split, evaluation mode (tuning->set_training(false) when given), no
// gradients, in batches of data.eval_batch_size copied to the model's
// device. With `comm` (data parallelism) rank r computes its
// batch_shard_range of each split — whole batches of the 1-rank sequence,
// so the very same forward passes — and the rows are gathered in rank
// order: every rank gets the 1-rank logits bit for bit.
std::vector<at::Tensor> task_dev_logits(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                        Communicator* comm = nullptr);

// The task's dev metrics from task_dev_logits' logits.
std::map<std::string, double> task_metrics(const TaskData& data, const std::vector<at::Tensor>& logits);

// task_metrics of task_dev_logits.
std::map<std::string, double> task_evaluate(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                            Communicator* comm = nullptr);

// Writes dev outputs to `path` (safetensors): for every dev split
// "<split>.logits" [n, num_labels] fp32 (task_dev_logits') and
// "<split>.labels" [n], so metrics can be recomputed outside dsee
// (tests/parity/test_glue.py does).
void task_write_predictions(const TaskData& data, const std::vector<at::Tensor>& logits,
                            const std::filesystem::path& path);

}  // namespace dsee
