#!/usr/bin/env bash
# The Slurm scripts without Slurm: launch/slurm.sbatch and the job-array
# script `dsee sweep --slurm` writes, run by bash with stand-in `srun` and
# `scontrol` on PATH (they record their arguments and signals).
#   - a finished srun: the script exits with srun's status, no requeue;
#   - USR1 (what --signal=B:USR1@300 sends before the time limit): srun gets
#     SIGTERM, the script waits for it, then `scontrol requeue` of this job
#     (sweep: of this array task, JOBID_TASKID) and exits 0;
#   - srun gets --kill-on-bad-exit=1 and --mpi=pmix (DSEE_SRUN_MPI overrides;
#     empty drops it); the sweep task runs its line of sweep.commands.
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
# srun: records its arguments; exits $SRUN_STATUS at once, or with
# SRUN_WAIT=1 runs until SIGTERM (then records it and exits 143).
cat > "$work/bin/srun" <<'SH'
#!/usr/bin/env bash
printf '%s\n' "$*" > "$WORK/srun.args"
if [[ ${SRUN_WAIT:-0} == 1 ]]; then
  trap 'echo TERM > "$WORK/srun.signal"; exit 143' TERM
  for _ in $(seq 300); do sleep 0.1; done
  exit 99
fi
exit "${SRUN_STATUS:-0}"
SH
printf '#!/bin/sh\necho "$*" >> "$WORK/scontrol.args"\n' > "$work/bin/scontrol"
printf '#!/bin/sh\necho Submitted 1\n' > "$work/bin/sbatch"
chmod +x "$work/bin/"*
export WORK=$work PATH="$work/bin:$PATH"

reset() { rm -f "$work/srun.args" "$work/srun.signal" "$work/scontrol.args"; }
# run_until_srun SCRIPT ARGS...: start the script, wait for srun to start, USR1
# to the script; echoes the script's exit status.
usr1_during_srun() {
  SRUN_WAIT=1 bash "$@" > "$work/script.out" 2>&1 &
  local pid=$! i
  for i in $(seq 100); do [[ -e $work/srun.args ]] && break; sleep 0.1; done
  sleep 0.2
  kill -USR1 "$pid"
  wait "$pid"
  echo $?
}

export SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=node1
cd "$repo" || exit 1

# launch/slurm.sbatch
reset
SRUN_STATUS=5 bash launch/slurm.sbatch recipes/demo.toml --set run.seed=3 > "$work/script.out" 2>&1
status=$?
check "slurm.sbatch: exits with srun's status (5), got $status" test "$status" = 5
check "slurm.sbatch: srun runs dsee run with the arguments, --kill-on-bad-exit=1 and --mpi=pmix" \
  grep -qx -- "--kill-on-bad-exit=1 --cpu-bind=none --mpi=pmix build/bin/dsee run recipes/demo.toml --set run.seed=3" \
  "$work/srun.args"
check "slurm.sbatch: no requeue without the signal" test ! -e "$work/scontrol.args"
reset
status=$(usr1_during_srun launch/slurm.sbatch recipes/demo.toml)
check "slurm.sbatch: USR1 → srun got SIGTERM" test -e "$work/srun.signal"
check "slurm.sbatch: USR1 → scontrol requeue 77" grep -qx "requeue 77" "$work/scontrol.args"
check "slurm.sbatch: USR1 → exit 0 after the ranks ended, got $status" test "$status" = 0
reset
DSEE_SRUN_MPI= SRUN_STATUS=0 bash launch/slurm.sbatch recipes/demo.toml > "$work/script.out" 2>&1
check "slurm.sbatch: DSEE_SRUN_MPI= drops --mpi" grep -qx -- "--kill-on-bad-exit=1 --cpu-bind=none build/bin/dsee run recipes/demo.toml" "$work/srun.args"

# dsee sweep --slurm → sweep.sbatch
printf '[task]\ntrain_size = 64\n' > "$work/base.toml"
printf 'recipe = "base.toml"\nout_dir = "%s/runs"\n[zip]\n"run.seed" = [1, 2, 3]\n' "$work" > "$work/s.toml"
"$dsee" sweep --slurm "$work/s.toml" > "$work/sweep.out" 2>&1
check "dsee sweep --slurm writes sweep.sbatch" test -e "$work/runs/s/sweep.sbatch"
script=$work/runs/s/sweep.sbatch
line2=$(sed -n 2p "$work/runs/s/sweep.commands")
check "sweep.sbatch: array of 3, USR1 five minutes before the limit, requeue" \
  grep -q -- "--array=0-2" "$script"
grep -q -- "--signal=B:USR1@300" "$script" && grep -q -- "#SBATCH --requeue" "$script" || { echo "FAIL sweep.sbatch headers"; failures=$((failures + 1)); }
reset
export SLURM_ARRAY_JOB_ID=50 SLURM_ARRAY_TASK_ID=1
SRUN_STATUS=4 bash "$script" > "$work/script.out" 2>&1
status=$?
check "sweep.sbatch: task 1 runs line 2 of sweep.commands under srun" \
  test "$(cat "$work/srun.args")" = "--kill-on-bad-exit=1 --mpi=pmix $(eval "printf '%s ' $line2" | sed 's/ $//')"
check "sweep.sbatch: exits with srun's status (4), got $status" test "$status" = 4
reset
status=$(usr1_during_srun "$script")
check "sweep.sbatch: USR1 → srun got SIGTERM" test -e "$work/srun.signal"
check "sweep.sbatch: USR1 → scontrol requeue 50_1" grep -qx "requeue 50_1" "$work/scontrol.args"
check "sweep.sbatch: USR1 → exit 0, got $status" test "$status" = 0
reset
SLURM_ARRAY_TASK_ID=7 bash "$script" > "$work/script.out" 2>&1
status=$?
check "sweep.sbatch: a task past the last line fails clearly (exit 2, got $status)" test "$status" = 2
check "sweep.sbatch: ... naming the missing line" grep -q "no line 8 in" "$work/script.out"

if ((failures)); then echo "$failures failure(s)"; exit 1; fi
echo "all passed"
