#!/usr/bin/env bash
# clang-tidy (the root's .clang-tidy: bugprone-*, performance-*) on the
# libraries below LibTorch's headers — base/, distributed/ and data/ — with
# the build's compile commands; warnings are errors. core/ and recipes/
# include LibTorch in every file, which makes a whole-tree run take longer
# than the rest of CI: run it on what you touch there
# (tests/check_tidy.sh BUILD_DIR core/train/trainer.cpp ...).
# Usage: tests/check_tidy.sh BUILD_DIR [FILE...]
set -euo pipefail
build=$(cd "${1:?usage: tests/check_tidy.sh BUILD_DIR [FILE...]}" && pwd)
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-tidy >/dev/null || { echo "FAILED: clang-tidy is not installed (launch/setup installs it)"; exit 1; }
[[ -f $build/compile_commands.json ]] || { echo "FAILED: no $build/compile_commands.json (configure with launch/setup)"; exit 1; }
if (($#)); then files=("$@"); else mapfile -t files < <(git ls-files 'base/*.cpp' 'distributed/*.cpp' 'data/*.cpp'); fi
# The build's commands without GCC's precompiled header, which clang cannot read.
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
python3 - "$build/compile_commands.json" "$db/compile_commands.json" <<'PY'
import json, re, sys
entries = json.load(open(sys.argv[1]))
for e in entries:
    e["command"] = re.sub(r"-include \S+cmake_pch\.hxx|-Winvalid-pch", "", e["command"])
json.dump(entries, open(sys.argv[2], "w"))
PY
start=$(date +%s)
if ! printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$db" --quiet --warnings-as-errors='*' 2>/dev/null; then
  echo "FAILED: clang-tidy found the problems above"
  exit 1
fi
echo "clang-tidy: ${#files[@]} files clean in $(($(date +%s) - start)) s ($(clang-tidy --version | grep -m1 version))"
