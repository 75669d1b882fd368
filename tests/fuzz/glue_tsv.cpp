// Fuzz target: a GLUE task file (data/glue.h). The first byte picks the task
// (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli); the rest is the TSV
// file. An accepted file must give one label (class id within the task's
// labels) or one score (finite) per example, and a second text exactly for
// the pair tasks.
#include <cmath>

#include "base/error.h"
#include "data/glue.h"
#include "fuzz_target.h"

DSEE_FUZZ_TARGET(glue_tsv) {
  if (size == 0) return 0;
  static const char* const tasks[] = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"};
  const std::string task = tasks[data[0] % 9];
  const auto path = dsee_fuzz::scratch_folder() / "train.tsv";
  dsee_fuzz::write_bytes(path, dsee_fuzz::as_text(data + 1, size - 1));
  try {
    const dsee::GlueExamples examples = dsee::glue_read(task, path);
    const dsee::GlueFileSpec& spec = dsee::glue_file_spec(task);
    const bool pairs = !(task == "cola" || task == "sst2");
    dsee_fuzz::require(examples.second.size() == (pairs ? examples.size() : 0));
    if (spec.num_labels == 1) {
      dsee_fuzz::require(examples.scores.size() == examples.size() && examples.labels.empty());
      for (const float score : examples.scores) dsee_fuzz::require(std::isfinite(score));
    } else {
      dsee_fuzz::require(examples.labels.size() == examples.size() && examples.scores.empty());
      for (const std::int64_t label : examples.labels) dsee_fuzz::require(label >= 0 && label < spec.num_labels);
    }
  } catch (const dsee::Error&) {
  }
  return 0;
}
