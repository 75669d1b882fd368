#!/usr/bin/env bash
# A stalled or killed rank ends the whole job with a non-zero exit within a
# bound, never a hang. Args: MPIEXEC N SCENARIO TIMEOUT_S BOUND_S DRIVER
set -uo pipefail
mpiexec=$1 n=$2 scenario=$3 timeout_s=$4 bound_s=$5 driver=$6
start_ms=$(($(date +%s%N) / 1000000))
# `timeout` turns a hang into rc 124 (and kills after 2x the bound).
out=$(timeout -k 5 $((2 * bound_s)) "$mpiexec" -n "$n" --oversubscribe "$driver" "$scenario" "$timeout_s" 2>&1)
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed=$((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))
echo "$out"
echo "--- $scenario on $n ranks: exit $rc after ${elapsed}s (watchdog timeout ${timeout_s}s, bound ${bound_s}s)"
[ "$rc" -ne 0 ] || { echo "FAILED: the job exited 0"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAILED: the job hung"; exit 1; }
((elapsed_ms < bound_s * 1000)) || { echo "FAILED: took ${elapsed}s, more than ${bound_s}s"; exit 1; }
grep -q "finished all steps" <<<"$out" && { echo "FAILED: a rank finished"; exit 1; }
case $scenario in
  stall)
    # Every waiting rank's watchdog may fire; at least one must say where.
    grep -qE "watchdog: rank [0-9]+: collective 'all_reduce' at step 7 has not finished after [0-9.]+ s \(dist.timeout_s = $timeout_s\)" <<<"$out" ||
      { echo "FAILED: no watchdog message naming all_reduce at step 7"; exit 1; }
    # MPI_Abort with the watchdog's exit code (3).
    [ "$rc" -eq 3 ] || { echo "FAILED: exit $rc, expected the watchdog's 3"; exit 1; } ;;
  kill)
    # Whoever notices first must say so: mpirun (the rank's signal), MPI (an
    # error) or the watchdog.
    grep -qE "signal 9|Killed|watchdog: rank|error: all_reduce" <<<"$out" ||
      { echo "FAILED: no message saying why the job ended"; exit 1; } ;;
esac
echo "ok"
