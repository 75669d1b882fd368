#!/usr/bin/env bash
# Every C++ and CUDA source the repository tracks is as clang-format (the
# root's .clang-format) writes it. launch/setup installs Debian's clang-format;
# fix a failure with `clang-format -i FILE`.
set -euo pipefail
cd "$1"
command -v clang-format >/dev/null || { echo "FAILED: clang-format is not installed (launch/setup installs it)"; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
((${#files[@]})) || { echo "FAILED: no sources found under $1 (not a git checkout?)"; exit 1; }
if ! clang-format --dry-run -Werror "${files[@]}"; then
  echo "FAILED: the files above are not clang-format clean; run clang-format -i on them"
  exit 1
fi
echo "${#files[@]} sources are clang-format clean ($(clang-format --version | head -1))"
