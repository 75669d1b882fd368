#!/usr/bin/env bash
# docs/recipes.md documents every recipe key: its table must be the one
# `dsee config --schema` prints from the schema.
set -euo pipefail
dsee=$1 readme=$2
table=$("$dsee" config --schema)
# The whole table, as one block (grep -F would accept any single line of it).
if [[ "$(cat "$readme")" != *"$table"* ]]; then
  echo "FAILED: $readme is out of date; paste the output of 'dsee config --schema' into it:"
  echo "$table"
  exit 1
fi
echo "$readme lists all $(($(wc -l <<<"$table") - 2)) keys"
