#!/usr/bin/env bash
# A/B training speed of two pzt binaries on the same recipe, runs interleaved:
#   benches/train_ab.sh OLD_PZT NEW_PZT [RECIPE] [RUNS]
# Prints the training time each run reports (`done: ... in T s`) and the mean per binary.
set -euo pipefail
old=$1; new=$2; recipe=${3:-recipes/quickstart.toml}; runs=${4:-3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
declare -A sum
for i in $(seq "$runs"); do
  for b in "$old" "$new"; do
    rm -rf "$tmp/run"
    t=$("$b" train "$recipe" --set run.out_dir="\"$tmp/run\"" | grep -o 'in [0-9.]* s' | grep -o '[0-9.]*')
    echo "$b run $i: $t s"
    sum[$b]=$(echo "${sum[$b]:-0} + $t" | bc -l)
  done
done
for b in "$old" "$new"; do printf '%s mean: %.2f s\n' "$b" "$(echo "${sum[$b]} / $runs" | bc -l)"; done
