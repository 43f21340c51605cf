#!/usr/bin/env bash
# Training on a busy machine: the small case of train_speed.sh (pzt only), idle and then with one
# core taken by a busy-loop shell, under pzt's default (GOMP_SPINCOUNT=10000), libgomp's own
# default spin count, a shorter one, OMP_WAIT_POLICY=PASSIVE and [train] threads = 1. Prints
# tokens/s (steps 2..STEPS) per setting, best of RUNS. libgomp reads these variables when it
# loads, so they are set per process; SETTINGS="name|ENV=VALUE|train line ..." replaces the list.
# Usage: benches/busy.sh   (after `make build`; dev only, needs transformers to make the model)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}; STEPS=${STEPS:-8}; BATCH=8; SEQ=128
PY=.venv/bin/python
DIR=/tmp/pzt-bench-train-small
[ -f "$DIR/model.safetensors" ] || $PY benches/train_speed.py make "$DIR" small >/dev/null 2>&1
tmp=$(mktemp -d); hog=""
trap 'rm -rf "$tmp"; [ -n "$hog" ] && kill "$hog" 2>/dev/null || true' EXIT
. benches/lib.sh
random_text "$tmp/text.txt" $((BATCH * (SEQ + 1) * (STEPS + 2)))
recipe() { # TRAIN_LINE -> recipe path
  text_recipe "$tmp/r.toml" busy "$tmp/run" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$STEPS" "$1"
  echo "$tmp/r.toml"
}
run() { # ENV THREADS_LINE -> best tokens/s
  local best=0 r
  for _ in $(seq "$RUNS"); do
    rm -rf "$tmp/run"
    r=$(env $1 ./target/release/pzt train "$(recipe "$2")" 2>&1 | grep -o 'tok/s [0-9]*' | tail -n +2 |
      awk -v k=$((BATCH * SEQ)) '{s += k / $2; n++} END {printf "%.0f", n * k / s}')
    best=$(awk -v a="$r" -v b="$best" 'BEGIN {print (a > b) ? a : b}')
  done
  echo "$best"
}
settings=(${SETTINGS:-"default (pzt: GOMP_SPINCOUNT=10000)|X=1|" "libgomp's own default (GOMP_SPINCOUNT=300000)|GOMP_SPINCOUNT=300000|" "GOMP_SPINCOUNT=1000|GOMP_SPINCOUNT=1000|" "OMP_WAIT_POLICY=PASSIVE|OMP_WAIT_POLICY=PASSIVE|" "threads = 1|X=1|threads = 1"})
declare -A idle busy
for s in "${settings[@]}"; do IFS='|' read -r name env line <<<"$s"; idle[$name]=$(run "$env" "$line"); done
sh -c 'while :; do :; done' & hog=$!
for s in "${settings[@]}"; do IFS='|' read -r name env line <<<"$s"; busy[$name]=$(run "$env" "$line"); done
echo "| threads and OpenMP waiting (small case) | idle tok/s | one core busy tok/s |"
echo "|---|---|---|"
for s in "${settings[@]}"; do IFS='|' read -r name _ _ <<<"$s"; echo "| $name | ${idle[$name]} | ${busy[$name]} |"; done
