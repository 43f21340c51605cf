#!/usr/bin/env bash
# Data-parallel training speed on the CPU, pzt side by side with PyTorch DDP: `pzt train --nproc
# N` against `torchrun --nproc-per-node N benches/ddp.py` (DistributedDataParallel over Gloo),
# both on the random Llama of benches/train_speed.sh's small case (4 layers d256), BATCH rows of
# SEQ tokens per rank, THREADS threads per rank. Runs alternate; each side's best global tokens/s
# over RUNS runs (steps 2..STEPS) is printed, with the ratio.
# Dev only: needs transformers in .venv (`make bench` installs it).
# Env: NPROC (2), BATCH (4), SEQ (128), STEPS (8), RUNS (3), THREADS (1).
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-2}; export BATCH=${BATCH:-4} SEQ=${SEQ:-128} THREADS=${THREADS:-1}
STEPS=${STEPS:-8}; RUNS=${RUNS:-3}
PY=.venv/bin/python
DIR=/tmp/pzt-bench-train-small
[ -f "$DIR/model.safetensors" ] || $PY benches/train_speed.py make "$DIR" small >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. benches/lib.sh
random_text "$tmp/text.txt" $((NPROC * BATCH * (SEQ + 1) * (STEPS + 2)))
text_recipe "$tmp/r.toml" ddp "$tmp/run" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$STEPS" "threads = $THREADS"
pzt_run() { # -> global tokens/s over steps 2..STEPS (rank 0 logs the global batch's tokens)
  rm -rf "$tmp/run"
  ./target/release/pzt train "$tmp/r.toml" --nproc "$NPROC" 2>&1 | grep -o 'tok/s [0-9]*' |
    tail -n +2 | awk -v k=$((NPROC * BATCH * SEQ)) '{s += k / $2; n++} END {printf "%.1f\n", n * k / s}'
}
torch_run() {
  OMP_NUM_THREADS=$THREADS $PY -m torch.distributed.run --nproc-per-node "$NPROC" \
    --master-port $((29700 + RANDOM % 200)) benches/ddp.py "$DIR" "$STEPS" 2>/dev/null | grep -E '^[0-9.]+$' | tail -1
}
best_p=0; best_t=0
for i in $(seq "$RUNS"); do
  p=$(pzt_run); t=$(torch_run)
  echo "  run $i: pzt $p tok/s, PyTorch DDP $t tok/s" >&2
  if awk -v a="$p" -v b="$best_p" 'BEGIN {exit !(a > b)}'; then best_p=$p; fi
  if awk -v a="$t" -v b="$best_t" 'BEGIN {exit !(a > b)}'; then best_t=$t; fi
done
ratio=$(awk -v a="$best_p" -v b="$best_t" 'BEGIN {printf "%.2f", a / b}')
printf '| data parallel, %d ranks x batch %d x seq %d, %s thread(s) each | %s tok/s | %s tok/s | %sx |\n' \
  "$NPROC" "$BATCH" "$SEQ" "$THREADS" "$best_p" "$best_t" "$ratio"
