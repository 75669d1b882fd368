#!/usr/bin/env bash
# launch/mpirun: prints the mpirun command it runs, passes NCCL_*/OMPI_*
# settings to every rank, gives the ranks DSEE_MPIRUN_SIGKILL_TIMEOUT seconds
# between Open MPI's SIGTERM and SIGKILL, and runs dsee on N ranks. Args: REPO DSEE
set -uo pipefail
repo=$1 dsee=$2
fail() { echo "FAILED: $*"; exit 1; }

out=$(NCCL_DEBUG=WARN NCCL_SOCKET_IFNAME=lo "$repo/launch/mpirun" -n 2 --oversubscribe -- "$dsee" env 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "exit $rc"
grep -q "^launch/mpirun: mpirun -n 2 --bind-to none .*-x NCCL_DEBUG .*--oversubscribe $dsee env$" <<<"$out" ||
  fail "the printed command is not the expected mpirun line"
grep -q -- "-x NCCL_SOCKET_IFNAME" <<<"$out" || fail "NCCL_SOCKET_IFNAME not passed"
grep -q -- "-x OMPI_ALLOW_RUN_AS_ROOT " <<<"$out" || fail "OMPI_* not passed"
for r in 0 1; do grep -q "rank $r of 2 on " <<<"$out" || fail "no block for rank $r"; done

# The ranks get time to checkpoint after mpirun forwards SIGTERM: 30 s unless
# DSEE_MPIRUN_SIGKILL_TIMEOUT says otherwise (mpi_run_mpirun_sigterm runs it).
grep -q -- "--mca odls_base_sigkill_timeout 30 " <<<"$out" || fail "no default odls_base_sigkill_timeout 30"
msg=$(DSEE_MPIRUN_SIGKILL_TIMEOUT=7 "$repo/launch/mpirun" -n 2 --dry-run -- "$dsee" env 2>&1)
grep -q -- "--mca odls_base_sigkill_timeout 7 " <<<"$msg" || fail "DSEE_MPIRUN_SIGKILL_TIMEOUT not used: $msg"

# Without -n and without GPUs it refuses, saying what to do.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  msg=$(PATH=/usr/bin:/bin "$repo/launch/mpirun" --dry-run -- "$dsee" env 2>&1)
  [ $? -eq 2 ] || fail "no -n, no GPU: expected exit 2"
  grep -q "say how many ranks with -n" <<<"$msg" || fail "no advice: $msg"
fi
echo ok
