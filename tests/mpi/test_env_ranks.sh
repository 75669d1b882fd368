#!/usr/bin/env bash
# `dsee env` under mpiexec -n N: exits 0 and rank 0 prints one block per rank,
# each naming its rank and its local rank (all ranks share this node, so
# local rank r of n for rank r).
set -euo pipefail
mpiexec=$1 n=$2 dsee=$3
out=$("$mpiexec" -n "$n" --oversubscribe "$dsee" env)
echo "$out"
for ((r = 0; r < n; r++)); do
  grep -q "rank $r of $n on " <<<"$out" || { echo "FAILED: no block for rank $r of $n"; exit 1; }
  grep -Eq "^dsee .*: rank $r of $n on [^ ]+ \(local rank $r of $n\)$" <<<"$out" ||
    { echo "FAILED: rank $r's block does not say (local rank $r of $n)"; exit 1; }
done
grep -q "MPI      Open MPI" <<<"$out" || { echo "FAILED: no MPI version"; exit 1; }
blocks=$(grep -c '^dsee ' <<<"$out")
[ "$blocks" -eq "$n" ] || { echo "FAILED: $blocks blocks for $n ranks"; exit 1; }
