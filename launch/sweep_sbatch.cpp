// sweep.sbatch: the job array of `dsee sweep --slurm`, one task per run.
//
// The stop path is launch/slurm.sbatch's (docs/distributed.md, 'Slurm: time
// limits and pre-emption'): `--signal=USR1@300` without `B:` has Slurm send USR1 to the
// ranks themselves, pre-emption sends them SIGTERM; they write a checkpoint
// and exit 138 / 143, srun passes that on, and the script requeues this
// array task, which resumes from the checkpoint (after SIGTERM only while
// Slurm pre-empts the job: a bare 143 is also what --kill-on-bad-exit leaves
// after a failed rank). The script never signals srun: srun answers SIGTERM
// with SIGKILL to every rank.
#include "launch/sweep_sbatch.h"

namespace dsee {

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string sweep_sbatch_script(const std::string& sweep_file, const Sweep& sweep) {
  std::string script = R"SH(#!/usr/bin/env bash
# Written by `dsee sweep --slurm @FILE@`: task i runs line i+1 of
# sweep.commands, unless its run directory (row i+1 of sweep.tsv) holds
# summary.json. Slurm sends USR1 to the ranks 5 minutes before the time limit
# (pre-emption: SIGTERM); they checkpoint and exit 138 / 143, and the task is
# requeued to resume (as in launch/slurm.sbatch).
#SBATCH --job-name=dsee-@NAME@
#SBATCH --array=0-@LAST@
#SBATCH --output=@DIR@/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@300
set -euo pipefail
row=$((SLURM_ARRAY_TASK_ID + 1))
line=$(sed -n "${row}p" @COMMANDS@)
[[ -n $line ]] || { echo "dsee: no line $row in "@COMMANDS@ >&2; exit 2; }
task="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
run_dir=$(sed -n "$((row + 1))p" @TSV@ | cut -f3)
if [[ -n $run_dir && -e $run_dir/summary.json ]]; then
  echo "dsee: array task $task: $run_dir is finished (summary.json), skipped"
  exit 0
fi
echo "dsee: array task $task (restart ${SLURM_RESTART_COUNT:-0}): $line"
# DSEE_SRUN_MPI: srun's MPI plugin for Open MPI (default pmix; empty: srun's default).
mpi=${DSEE_SRUN_MPI-pmix}
eval "command=($line)"  # the line is shell-quoted words
status=0
srun --kill-on-bad-exit=1 ${mpi:+--mpi=$mpi} "${command[@]}" || status=$?
# Requeue after USR1 (138) or a pre-emption's SIGTERM (143 with a PreemptTime);
# a bare 143 is --kill-on-bad-exit's SIGTERM after a failed rank.
if ((status == 138)) || [[ $status == 143 && $(scontrol show job "$SLURM_JOB_ID") == *PreemptTime=[0-9]* ]]; then
  echo "dsee: the ranks stopped on a signal (exit $status): requeueing array task $task to resume"
  scontrol requeue "$task"
fi
exit "$status"
)SH";
  const auto fill = [&](const std::string& key, const std::string& value) {
    for (auto at = script.find(key); at != std::string::npos; at = script.find(key, at + value.size()))
      script.replace(at, key.size(), value);
  };
  fill("@FILE@", sweep_file);
  fill("@NAME@", sweep.name);
  fill("@LAST@", std::to_string(sweep.runs.size() - 1));
  fill("@DIR@", sweep.out_dir.string());
  fill("@COMMANDS@", shell_quote((sweep.out_dir / "sweep.commands").string()));
  fill("@TSV@", shell_quote((sweep.out_dir / "sweep.tsv").string()));
  return script;
}

}  // namespace dsee
