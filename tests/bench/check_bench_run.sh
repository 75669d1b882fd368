#!/usr/bin/env bash
# The `bench_run_smoke` test: bench/run --smoke (tiny shapes, one step each
# side) with the given arguments, so the benchmark never rots. Fails when
# bench/run fails or when a requested section printed no table: every
# section's output is a "#### " heading followed by a Markdown table.
# Usage: tests/bench/check_bench_run.sh REPO --sections a,b,... [bench/run args]
# (DSEE_BUILD_DIR and DSEE_PYTHON as bench/run reads them).
set -euo pipefail
repo="${1:?usage: check_bench_run.sh REPO --sections a,b,... [args]}"
shift
[ "${1:-}" = --sections ] || { echo "FAILED: check_bench_run.sh needs --sections first"; exit 2; }
IFS=, read -r -a sections <<< "$2"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! "$repo/bench/run" --smoke "$@" > "$out"; then
  cat "$out"
  echo "FAILED: bench/run --smoke $* exited non-zero"
  exit 1
fi
cat "$out"
# Every "#### " heading must be followed by a table before the next one, and
# there must be one per requested section at least.
read -r headings tables < <(awk '/^#### / { if (open) n += seen; h++; open = 1; seen = 0 } /^\|---/ { if (open) seen = 1 }
                                END { if (open) n += seen; print h + 0, n + 0 }' "$out")
if [ "$tables" -lt "$headings" ] || [ "$headings" -lt "${#sections[@]}" ]; then
  echo "FAILED: ${#sections[@]} section(s) requested (${sections[*]}): $headings heading(s), $tables with a table"
  exit 1
fi
echo "bench/run --smoke: ${#sections[@]} section(s), $tables table(s)"
