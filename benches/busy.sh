#!/usr/bin/env bash
# Training on a busy machine: pzt's default thread choice against one and two threads, on the
# quickstart and the two cases of train_speed.sh, idle and then with one core taken by a
# busy-loop shell. Prints tokens/s of steps 2..N (best of RUNS) per setting, and how far the
# default is from the best setting of its row (the target: within 1.5x, idle and busy).
# Usage: benches/busy.sh [SIZES...]   (after `make build`; dev only, needs transformers in .venv
# to make the random models; SIZES default: quickstart small large)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}
PY=.venv/bin/python
SIZES=("${@:-quickstart small large}")
read -r -a SIZES <<<"${SIZES[*]}"
tmp=$(mktemp -d); hog=""
trap 'rm -rf "$tmp"; [ -n "$hog" ] && kill "$hog" 2>/dev/null || true' EXIT
. benches/lib.sh

# recipe SIZE TRAIN_LINE -> prints the recipe path (and the tokens of a step, after a space)
recipe() {
  local size=$1 line=$2
  if [ "$size" = quickstart ]; then
    cat > "$tmp/q.toml" <<TOML
include = ["$PWD/recipes/quickstart.toml"]
[run]
name = "busy"
out_dir = "$tmp/run"
[train]
steps = 100
log_every = 10
eval_every = 0
$line
[checkpoint]
every_steps = 1000000
TOML
    echo "$tmp/q.toml $((32 * 12))"
    return
  fi
  local batch seq steps dir=/tmp/pzt-bench-train-$size
  case $size in
    small) batch=8; seq=128; steps=8;;
    large) batch=4; seq=512; steps=4;;
  esac
  [ -f "$dir/model.safetensors" ] || $PY benches/train_speed.py make "$dir" "$size" >/dev/null
  [ -f "$tmp/text-$size.txt" ] || random_text "$tmp/text-$size.txt" $((batch * (seq + 1) * (steps + 2)))
  text_recipe "$tmp/r.toml" busy "$tmp/run" "$dir" "$tmp/text-$size.txt" "$seq" "$batch" "$steps" "$line"
  echo "$tmp/r.toml $((batch * seq))"
}

# run SIZE TRAIN_LINE -> best tokens/s over RUNS (the logged steps after the first)
run() {
  local best=0 r f k
  read -r f k <<<"$(recipe "$1" "$2")"
  for _ in $(seq "$RUNS"); do
    rm -rf "$tmp/run"
    r=$(./target/release/pzt train "$f" 2>&1 | grep -o 'tok/s [0-9]*' | tail -n +2 |
      awk -v k="$k" '{s += k / $2; n++} END {printf "%.0f", n * k / s}')
    best=$(awk -v a="$r" -v b="$best" 'BEGIN {print (a > b) ? a : b}')
  done
  echo "$best"
}

settings=("default|" "threads = 1|threads = 1" "threads = 2|threads = 2")
declare -A res
for phase in idle busy; do
  if [ "$phase" = busy ]; then sh -c 'while :; do :; done' & hog=$!; fi
  for size in "${SIZES[@]}"; do
    for s in "${settings[@]}"; do
      IFS='|' read -r name line <<<"$s"
      res[$phase,$size,$name]=$(run "$size" "$line")
    done
  done
done
echo "| case | machine | default | threads = 1 | threads = 2 | best / default |"
echo "|---|---|---|---|---|---|"
for size in "${SIZES[@]}"; do
  for phase in idle busy; do
    d=${res[$phase,$size,default]}; a=${res[$phase,$size,threads = 1]}; b=${res[$phase,$size,threads = 2]}
    ratio=$(awk -v d="$d" -v a="$a" -v b="$b" 'BEGIN {m = (a > b) ? a : b; m = (d > m) ? d : m; printf "%.2fx", m / d}')
    echo "| $size | $phase | $d | $a | $b | $ratio |"
  done
done
