#!/usr/bin/env bash
# The branches of launch/slurm.sbatch and of the job-array script that
# `dsee sweep --slurm` writes, run by bash with stand-in `srun` and `scontrol`
# on PATH (they record their arguments; srun exits $SRUN_STATUS). The real
# Slurm runs these scripts in tests/slurm/test_slurm.py (label slurm, as
# root); this one runs anywhere, in a second:
#   - srun gets --kill-on-bad-exit=1 and --mpi=pmix (DSEE_SRUN_MPI overrides;
#     empty drops it); the script exits with srun's status;
#   - 138 (the ranks stopped on USR1) → `scontrol requeue` of this job (sweep:
#     JOBID_TASKID); 143 → requeue only while the job has a PreemptTime (a
#     bare 143 is --kill-on-bad-exit's SIGTERM after a failed rank);
#   - a sweep task runs its line of sweep.commands, skips a run directory
#     with summary.json, and fails clearly past the last line.
# usage: test_sbatch_scripts.sh REPO_ROOT DSEE_BINARY
set -uo pipefail
repo=$1 dsee=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
check() {  # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

mkdir -p "$work/bin"
cat > "$work/bin/srun" <<'SH'
#!/bin/sh
printf '%s\n' "$*" > "$WORK/srun.args"
exit "${SRUN_STATUS:-0}"
SH
# scontrol: `show job` prints PreemptTime=$PREEMPT_TIME, anything else is recorded.
cat > "$work/bin/scontrol" <<'SH'
#!/bin/sh
if [ "$1" = show ]; then
  echo "JobId=$3 JobState=RUNNING PreemptEligibleTime=x PreemptTime=${PREEMPT_TIME:-None}"
  exit 0
fi
echo "$*" >> "$WORK/scontrol.args"
SH
chmod +x "$work/bin/"*
export WORK=$work PATH="$work/bin:$PATH"

reset() { rm -f "$work/srun.args" "$work/scontrol.args"; }
# run_script SRUN_STATUS SCRIPT ARGS...: echoes the script's exit status.
run_script() {
  SRUN_STATUS=$1 bash "${@:2}" > "$work/script.out" 2>&1
  echo $?
}

export SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=node1
cd "$repo" || exit 1

# launch/slurm.sbatch
reset
status=$(run_script 5 launch/slurm.sbatch recipes/demo.toml --set run.seed=3)
check "slurm.sbatch: exits with srun's status (5), got $status" test "$status" = 5
check "slurm.sbatch: srun runs dsee run with the arguments, --kill-on-bad-exit=1 and --mpi=pmix" \
  grep -qx -- "--kill-on-bad-exit=1 --cpu-bind=none --mpi=pmix build/bin/dsee run recipes/demo.toml --set run.seed=3" \
  "$work/srun.args"
check "slurm.sbatch: no requeue after exit 5" test ! -e "$work/scontrol.args"
reset
status=$(run_script 138 launch/slurm.sbatch recipes/demo.toml)
check "slurm.sbatch: 138 (stopped on USR1) → scontrol requeue 77" grep -qx "requeue 77" "$work/scontrol.args"
check "slurm.sbatch: ... and exits 138, got $status" test "$status" = 138
reset
status=$(run_script 143 launch/slurm.sbatch recipes/demo.toml)
check "slurm.sbatch: 143 without PreemptTime → no requeue, exit 143 (got $status)" \
  test ! -e "$work/scontrol.args" -a "$status" = 143
reset
status=$(PREEMPT_TIME=2026-12-02T13:00:00 run_script 143 launch/slurm.sbatch recipes/demo.toml)
check "slurm.sbatch: 143 while pre-empted (PreemptTime set) → scontrol requeue 77" \
  grep -qx "requeue 77" "$work/scontrol.args"
reset
DSEE_SRUN_MPI= run_script 0 launch/slurm.sbatch recipes/demo.toml > /dev/null
check "slurm.sbatch: DSEE_SRUN_MPI= drops --mpi" \
  grep -qx -- "--kill-on-bad-exit=1 --cpu-bind=none build/bin/dsee run recipes/demo.toml" "$work/srun.args"

# dsee sweep --slurm → sweep.sbatch
printf '[task]\ntrain_size = 64\n' > "$work/base.toml"
printf 'recipe = "base.toml"\nout_dir = "%s/runs"\n[zip]\n"run.seed" = [1, 2, 3]\n' "$work" > "$work/s.toml"
"$dsee" sweep --slurm --dry-run "$work/s.toml" > "$work/sweep.out" 2>&1
script=$work/runs/s/sweep.sbatch
check "dsee sweep --slurm writes sweep.sbatch" test -e "$script"
check "sweep.sbatch: an array of 3" grep -q -- "^#SBATCH --array=0-2$" "$script"
check "sweep.sbatch: USR1 to the ranks (no B:) five minutes before the limit, requeueable" \
  bash -c "grep -qx -- '#SBATCH --signal=USR1@300' '$script' && grep -qx -- '#SBATCH --requeue' '$script'"
line2=$(sed -n 2p "$work/runs/s/sweep.commands")
export SLURM_ARRAY_JOB_ID=50 SLURM_ARRAY_TASK_ID=1
reset
status=$(run_script 4 "$script")
check "sweep.sbatch: task 1 runs line 2 of sweep.commands under srun" \
  test "$(cat "$work/srun.args")" = "--kill-on-bad-exit=1 --mpi=pmix $(eval "printf '%s ' $line2" | sed 's/ $//')"
check "sweep.sbatch: exits with srun's status (4), got $status" test "$status" = 4
reset
status=$(run_script 138 "$script")
check "sweep.sbatch: 138 → scontrol requeue 50_1, exit 138 (got $status)" \
  bash -c "grep -qx 'requeue 50_1' '$work/scontrol.args' && test $status = 138"
reset
status=$(run_script 143 "$script")
check "sweep.sbatch: 143 without PreemptTime → no requeue" test ! -e "$work/scontrol.args"
reset
run_dir=$(sed -n 3p "$work/runs/s/sweep.tsv" | cut -f3)
mkdir -p "$run_dir" && echo '{}' > "$run_dir/summary.json"
status=$(run_script 0 "$script")
check "sweep.sbatch: task 1's run has summary.json → skipped without srun, exit 0 (got $status)" \
  test ! -e "$work/srun.args" -a "$status" = 0
check "sweep.sbatch: ... saying so" grep -q "is finished (summary.json), skipped" "$work/script.out"
status=$(SLURM_ARRAY_TASK_ID=7 run_script 0 "$script")
check "sweep.sbatch: a task past the last line fails clearly (exit 2, got $status)" test "$status" = 2
check "sweep.sbatch: ... naming the missing line" grep -q "no line 8 in" "$work/script.out"

if ((failures)); then echo "$failures failure(s)"; exit 1; fi
echo "all passed"
