// GLUE metrics with the reference definitions (scikit-learn, scipy), and the
// task → metric map of docs/models.md ('Tasks'). Inputs are host vectors:
// evaluation gathers predictions once, then these run in O(n) or O(n log n).
//
//   accuracy      fraction of equal entries
//   f1            F1 of class 1 (sklearn f1_score, binary; 0 when tp+fp+fn = 0)
//   mcc           Matthews correlation, multiclass form (sklearn
//                 matthews_corrcoef; 0 when a marginal is constant)
//   pearson       scipy.stats.pearsonr; NaN for constant input (as scipy)
//   spearman      Pearson of average ranks (ties share the mean rank)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace dsee {

// Every function: dsee::Error when the lengths differ or are 0.
double accuracy(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels);
double f1_positive(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels);
double matthews_correlation(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels);
double pearson_correlation(std::span<const double> x, std::span<const double> y);
double spearman_correlation(std::span<const double> x, std::span<const double> y);
// Ranks 1..n, ties get their average rank (scipy.stats.rankdata "average").
std::vector<double> average_ranks(std::span<const double> values);

enum class GlueTask { cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli };

struct GlueTaskInfo {
  GlueTask task;
  const char* name;                  // "cola", "sst2", ... (folder-style: CoLA, SST-2 also accepted)
  std::int64_t num_labels;           // 1 = regression (STS-B)
  std::vector<std::string> metrics;  // reported, in order
  std::string main_metric;           // the one that picks the best checkpoint
};

// Accepts "cola"/"CoLA", "sst2"/"SST-2", "sts-b"/"stsb", "mnli", ... (case
// and '-' ignored); dsee::Error listing the tasks otherwise.
GlueTask glue_task_from_name(const std::string& name);
const GlueTaskInfo& glue_task_info(GlueTask task);

// The task's metrics from model outputs: logits [n, num_labels] (argmax for
// classification; logits[:, 0] for regression) and labels [n] (int64
// classes, or float scores for STS-B). Keys are GlueTaskInfo::metrics.
std::map<std::string, double> glue_metrics(GlueTask task, const at::Tensor& logits, const at::Tensor& labels);

}  // namespace dsee
