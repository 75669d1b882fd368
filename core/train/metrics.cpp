// GLUE metrics (see metrics.h). Everything accumulates in double (counts as
// int64) so results agree with scikit-learn / scipy to rounding.
#include "core/train/metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "base/error.h"
#include "base/shape_text.h"

namespace dsee {

namespace {

template <typename T>
void check_pair(std::span<const T> a, std::span<const T> b, const char* metric) {
  DSEE_CHECK(a.size() == b.size(), "{}: {} predictions but {} labels", metric, a.size(), b.size());
  DSEE_CHECK(!a.empty(), "{}: no examples to score", metric);
}

}  // namespace

double accuracy(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels) {
  check_pair(predictions, labels, "accuracy");
  std::int64_t equal = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) equal += predictions[i] == labels[i];
  return static_cast<double>(equal) / static_cast<double>(labels.size());
}

double f1_positive(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels) {
  check_pair(predictions, labels, "f1");
  std::int64_t tp = 0, fp = 0, fn = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const bool predicted = predictions[i] == 1, actual = labels[i] == 1;
    tp += predicted && actual;
    fp += predicted && !actual;
    fn += !predicted && actual;
  }
  const std::int64_t denominator = 2 * tp + fp + fn;
  return denominator == 0 ? 0.0 : static_cast<double>(2 * tp) / static_cast<double>(denominator);
}

// Note [Matthews correlation, multiclass]
// sklearn's form over the confusion matrix C (classes = union of labels and
// predictions): with t = row sums, p = column sums, c = trace, s = n,
//   MCC = (c·s − t·p) / sqrt((s² − p·p)(s² − t·t)),
// and 0 when the denominator product is 0 (a constant prediction or label).
// For two classes it is the familiar (tp·tn − fp·fn)/sqrt(...).
double matthews_correlation(std::span<const std::int64_t> predictions, std::span<const std::int64_t> labels) {
  check_pair(predictions, labels, "mcc");
  std::map<std::int64_t, std::pair<double, double>> sums;  // class -> (t, p)
  double correct = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    sums[labels[i]].first += 1;
    sums[predictions[i]].second += 1;
    correct += predictions[i] == labels[i];
  }
  const auto n = static_cast<double>(labels.size());
  double tp = 0, pp = 0, tt = 0;
  for (const auto& [cls, tp_pair] : sums) {
    tp += tp_pair.first * tp_pair.second;
    pp += tp_pair.second * tp_pair.second;
    tt += tp_pair.first * tp_pair.first;
  }
  const double cov_ytyp = correct * n - tp, cov_ypyp = n * n - pp, cov_ytyt = n * n - tt;
  const double product = cov_ypyp * cov_ytyt;
  return product == 0 ? 0.0 : cov_ytyp / std::sqrt(product);
}

double pearson_correlation(std::span<const double> x, std::span<const double> y) {
  check_pair(x, y, "pearson");
  const auto n = static_cast<double>(x.size());
  const double x_mean = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double y_mean = std::accumulate(y.begin(), y.end(), 0.0) / n;
  const bool x_constant = std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; });
  const bool y_constant = std::all_of(y.begin(), y.end(), [&](double v) { return v == y[0]; });
  if (x_constant || y_constant) return std::numeric_limits<double>::quiet_NaN();
  double xy = 0, xx = 0, yy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double dx = x[i] - x_mean, dy = y[i] - y_mean;
    xy += dx * dy;
    xx += dx * dx;
    yy += dy * dy;
  }
  return std::clamp(xy / (std::sqrt(xx) * std::sqrt(yy)), -1.0, 1.0);
}

std::vector<double> average_ranks(std::span<const double> values) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (std::size_t begin = 0; begin < order.size();) {
    std::size_t end = begin + 1;
    while (end < order.size() && values[order[end]] == values[order[begin]]) ++end;
    // Positions begin..end-1 hold equal values: ranks begin+1..end, mean (begin+1+end)/2.
    const double rank = (static_cast<double>(begin + 1) + static_cast<double>(end)) / 2.0;
    for (std::size_t k = begin; k < end; ++k) ranks[order[k]] = rank;
    begin = end;
  }
  return ranks;
}

double spearman_correlation(std::span<const double> x, std::span<const double> y) {
  check_pair(x, y, "spearman");
  const std::vector<double> x_ranks = average_ranks(x), y_ranks = average_ranks(y);
  return pearson_correlation(x_ranks, y_ranks);
}

namespace {

// Main metrics follow the GLUE leaderboard's first number of each pair
// (MRPC/QQP "F1/accuracy", STS-B "Pearson/Spearman").
const std::vector<GlueTaskInfo>& glue_tasks() {
  static const std::vector<GlueTaskInfo> tasks = {
      {GlueTask::cola, "cola", 2, {"mcc"}, "mcc"},
      {GlueTask::sst2, "sst2", 2, {"accuracy"}, "accuracy"},
      {GlueTask::mrpc, "mrpc", 2, {"accuracy", "f1"}, "f1"},
      {GlueTask::qqp, "qqp", 2, {"accuracy", "f1"}, "f1"},
      {GlueTask::stsb, "stsb", 1, {"pearson", "spearman"}, "pearson"},
      {GlueTask::mnli, "mnli", 3, {"accuracy"}, "accuracy"},
      {GlueTask::qnli, "qnli", 2, {"accuracy"}, "accuracy"},
      {GlueTask::rte, "rte", 2, {"accuracy"}, "accuracy"},
      {GlueTask::wnli, "wnli", 2, {"accuracy"}, "accuracy"},
  };
  return tasks;
}

}  // namespace

GlueTask glue_task_from_name(const std::string& name) {
  std::string key;
  for (char ch : name)
    if (ch != '-' && ch != '_') key += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const auto& info : glue_tasks())
    if (key == info.name) return info.task;
  DSEE_CHECK(false, "unknown GLUE task '{}': use one of cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli", name);
  return GlueTask::cola;
}

const GlueTaskInfo& glue_task_info(GlueTask task) {
  for (const auto& info : glue_tasks())
    if (info.task == task) return info;
  DSEE_ASSERT(false, "GlueTask {} has no entry", static_cast<int>(task));
}

std::map<std::string, double> glue_metrics(GlueTask task, const at::Tensor& logits, const at::Tensor& labels) {
  const GlueTaskInfo& info = glue_task_info(task);
  DSEE_CHECK(
      logits.dim() == 2 && logits.size(1) == info.num_labels && labels.dim() == 1 && labels.size(0) == logits.size(0),
      "{} metrics: logits must be [n, {}] and labels [n], got {} and {}", info.name, info.num_labels,
      shape_text(logits.sizes()), shape_text(labels.sizes()));
  std::map<std::string, double> result;
  if (info.num_labels == 1) {
    const at::Tensor x = logits.select(1, 0).to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor y = labels.to(at::kCPU, at::kDouble).contiguous();
    const std::span<const double> xs(x.data_ptr<double>(), x.numel()), ys(y.data_ptr<double>(), y.numel());
    result["pearson"] = pearson_correlation(xs, ys);
    result["spearman"] = spearman_correlation(xs, ys);
    return result;
  }
  DSEE_CHECK(labels.scalar_type() == at::kLong, "{} metrics: labels must be int64 classes, got {}", info.name,
             c10::toString(labels.scalar_type()));
  const at::Tensor predicted = logits.argmax(1).to(at::kCPU).contiguous();
  const at::Tensor actual = labels.to(at::kCPU).contiguous();
  const std::span<const std::int64_t> ps(predicted.data_ptr<std::int64_t>(), predicted.numel()),
      ls(actual.data_ptr<std::int64_t>(), actual.numel());
  for (const std::string& metric : info.metrics) {
    if (metric == "accuracy") result[metric] = accuracy(ps, ls);
    if (metric == "f1") result[metric] = f1_positive(ps, ls);
    if (metric == "mcc") result[metric] = matthews_correlation(ps, ls);
  }
  return result;
}

}  // namespace dsee
