// The task a recipe trains on, whatever it is: the built-in demo, a GLUE
// task read from task.data_dir (data/glue.h), or a data-to-text task (E2E,
// WebNLG, DART: data/nlg_data.h) for GPT-2. The pipeline's stages see only
// this: tensors for the training split and each dev split, the head's size,
// whether the task is a regression or a causal LM, and how to score it.
//
// Data-to-text tasks (Note [Data-to-text in the pipeline] in task_data.cpp):
// the training split holds input_ids, attention_mask and labels [n, seq]
// (-100 outside the completion), each batch trimmed to its longest row; a dev
// split's rows are its contexts (input_ids the prompts, right-padded), and
// TaskData::nlg holds their references, the test split's when eval.splits
// lists it, and the decoding options. Evaluation
// decodes the prompts (core/train/generation.h) and scores the hypotheses
// (core/train/nlg_scores.h).
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
#include "core/train/generation.h"
#include "core/train/trainer.h"
#include "core/tuning/tuning.h"
#include "data/distributed_sampler.h"
#include "data/nlg_data.h"
#include "data/tokenizer.h"
#include "distributed/communicator.h"
#include "recipes/demo_data.h"
#include "recipes/recipe.h"

namespace dsee {

struct TaskSplit {
  std::string name;  // "train", "dev", "dev_matched", "dev_mismatched"
  std::map<std::string, at::Tensor> tensors;
  std::int64_t size() const { return tensors.at("input_ids").size(0); }
};

// A data-to-text split that evaluation decodes: its contexts with their
// references and prompts.
struct NlgSplit {
  std::string name;  // "dev" or "test": its hypothesis files' prefix and its scores' key in stages/eval.json
  std::vector<NlgItem> items;
  std::vector<std::vector<std::int64_t>> prompts;  // BPE(context) + eos, the last max_seq_length − max_new_tokens
};

// What decoding and scoring a data-to-text task needs.
struct NlgTaskData {
  std::vector<NlgSplit> dev;     // parallel to TaskData::dev
  std::optional<NlgSplit> test;  // eval.splits lists "test": decoded by the eval stage only
  std::shared_ptr<const Tokenizer> tokenizer;
  GenerationOptions generation;
};

struct TaskData {
  std::string task;                      // "demo" or the canonical GLUE name ("sst2", "stsb", ...)
  std::filesystem::path pretrained_dir;  // the demo's generated model, or model.path
  TaskSplit train;
  std::vector<TaskSplit> dev;
  std::int64_t num_labels = 2;  // 1: regression (STS-B, MSE loss)
  bool regression = false;
  bool causal_lm = false;              // a data-to-text task: GPT-2's LM head, `nlg` set
  std::shared_ptr<NlgTaskData> nlg;    // data-to-text tasks only
  std::int64_t eval_batch_size = 256;  // eval.batch_size: dev rows per forward pass (contexts per decoding batch)
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

// How TaskBatches shapes the data-to-text training batches (Note
// [Data-to-text in the pipeline]).
struct TaskBatchShape {
  // Cut every [batch, seq] tensor of a batch to its longest row by
  // attention_mask (right padding).
  bool trim_padding = false;
  // Global batches of rows of similar length (nlg_length_batches of the
  // rows' attention_mask lengths, pools of 50 batches) instead of the
  // shuffled order cut into batches; needs attention_mask.
  bool length_buckets = false;
};

// Micro-batches of a split's tensors (all of them), rows in the sampler's
// order: shuffled per epoch from seed, the last partial batch kept, or with
// length_buckets the epoch's length-bucketed batches of the same shuffled
// order; rank `rank` of `world_size` gets its contiguous share of each global
// batch (shard_range). The global batches depend on (seed, epoch) only, never
// on the rank count, so sample_index — global samples of the epoch consumed —
// resumes on any number of ranks.
class TaskBatches final : public BatchSource {
 public:
  TaskBatches(const TaskSplit& split, std::int64_t global_batch_size, std::uint64_t seed, int rank = 0,
              int world_size = 1, TaskBatchShape shape = {});
  std::int64_t batches_per_epoch() const override;
  void start_epoch(std::int64_t epoch) override;
  std::optional<TrainBatch> next() override;
  std::int64_t sample_index() const override;
  // dsee::Error when `sample_index` is not the start of a global batch of the
  // epoch (a checkpoint of another train.batch_size or training set).
  void seek(std::int64_t epoch, std::int64_t sample_index) override;
  // For the batch next() returned last: local mean loss × this = the piece's
  // share, such that the mean over ranks is the global mean (see
  // data/distributed_sampler.h); 1 on one rank.
  double loss_scale() const { return loss_scale_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  int rank_;
  int world_size_;
  std::int64_t global_batch_;  // samples of all ranks' pieces together
  std::uint64_t seed_;
  DistributedSampler sampler_;
  std::int64_t left_ = 0;
  double loss_scale_ = 1.0;
  TaskBatchShape shape_;
  // length_buckets: each row's length, the epoch's global batches, the next
  // one's index and the samples of the epoch before it.
  std::vector<std::int64_t> lengths_;
  std::vector<std::vector<std::int64_t>> bucket_batches_;
  std::size_t next_bucket_ = 0;
  std::int64_t bucket_sample_ = 0;
};

// The model's inputs from a batch's tensors (input_ids and, when present,
// attention_mask and token_type_ids).
ModelInput task_model_input(const std::map<std::string, at::Tensor>& tensors);

// Cross-entropy, or MSE on the single output for regression, of a batch
// (CPU tensors; copied to the model's device). For a causal LM batch
// (labels [batch, seq]) the logits [batch, seq, vocab]: the trainer takes
// the loss (TrainerOptions::causal_lm).
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

// A data-to-text split's decoding: the hypotheses (one per context,
// nlg_completion_text) of the model as it is, in evaluation mode, in batches
// of eval.batch_size contexts. With `comm` rank r decodes its
// batch_shard_range of the contexts — whole decoding batches of the 1-rank
// run, so the very same searches — and the generated ids are gathered in rank
// order: every rank gets the 1-rank hypotheses.
std::vector<std::string> task_nlg_hypotheses(PretrainedModel& model, ModelTuning* tuning, const TaskData& data,
                                             const NlgSplit& split, Communicator* comm = nullptr);
// task_nlg_hypotheses of every dev split.
std::vector<std::vector<std::string>> task_dev_hypotheses(PretrainedModel& model, ModelTuning* tuning,
                                                          const TaskData& data, Communicator* comm = nullptr);
// A split's scores: bleu, nist, rouge_l, cider, ter (core/train/nlg_scores.h);
// WebNLG adds each metric over the seen and the unseen categories
// ("bleu_seen", ...).
std::map<std::string, double> task_nlg_scores(const TaskData& data, const NlgSplit& split,
                                              const std::vector<std::string>& hypotheses);
// task_nlg_scores of every dev split, the split's name a suffix after the first.
std::map<std::string, double> task_nlg_metrics(const TaskData& data,
                                               const std::vector<std::vector<std::string>>& hypotheses);
// Writes a split's hypotheses to `dir`/<split>.hyp.txt (one per line), its
// references to <split>.ref<k>.txt (reference k of each context, an empty
// line where it has fewer: sacrebleu's and `dsee score`'s layout) and to
// <split>.refs.txt (each context's references, one per line, contexts
// separated by a blank line: the E2E challenge scorer's layout).
void task_write_hypotheses(const NlgSplit& split, const std::vector<std::string>& hypotheses,
                           const std::filesystem::path& dir);

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
