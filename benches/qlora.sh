#!/usr/bin/env bash
# QLoRA benchmark: a LoRA step on a bfloat16 base against QLoRA steps on the same base
# quantized as NF4 and as int8 (`[strategy] quantize`), on a random Llama of 12 layers x d1024
# (benches/qlora.py make: 220M parameters, bfloat16), rank-16 LoRA on the seven projections,
# AdamW, bfloat16 autocast, BATCH x SEQ tokens (default 2 x 256), 2 threads; with and without
# activation checkpointing of every block, and with checkpointing and the loss in chunks of 64
# tokens (`[train] loss_chunk_tokens = 64`: the lean setting), and the lean setting with freed
# memory given back (`[train] release_memory = true`). Time: mean seconds per step (steps 2..N). Memory: peak
# RSS, and above the baseline: less the RSS of `pzt --version` (loading libtorch, the memory its
# start-up freed returned).
# Dev only: needs transformers in .venv (to make the model).
# Usage: benches/qlora.sh [STEPS] [DIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}; DIR=${2:-/tmp/pzt-bench-qlora}
BATCH=${BATCH:-2}; SEQ=${SEQ:-256}
PY=.venv/bin/python
[ -f "$DIR/model.safetensors" ] || PYTHONPATH=benches $PY benches/qlora.py make "$DIR" >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. benches/lib.sh
random_text "$tmp/text.txt" 200000
rss_of_version() { (/usr/bin/time -f "RSS %M" ./target/release/pzt --version >/dev/null) 2>&1 | grep '^RSS' | awk '{print int($2 / 1024)}'; }
# The baseline is libtorch loaded with the memory its start-up freed given back (jemalloc's decay
# at 0): every run here gives that memory back while it loads the model (a purge after each
# tensor) and again between steps, so a baseline that kept it would credit the runs with it.
base=$(MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 rss_of_version)
base_kept=$(rss_of_version)
run() { # NAME STRATEGY_LINES TRAIN_LINE -> "seconds_per_step peak_MB"
  local f="$tmp/$1.toml" out r
  text_recipe "$f" "$1" "$tmp/run-$1" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$N" "threads = 2
precision = \"bf16\"
$3"
  sed -i 's/^hf = .*/&\ndtype = "bfloat16"/' "$f"
  printf '[strategy]\nkind = "lora"\n%s\n[strategy.lora]\ntargets = "all-linear"\nrank = 16\nalpha = 32.0\n' "$2" >> "$f"
  out=$(/usr/bin/time -f "RSS %M" ./target/release/pzt train "$f" 2>&1)
  r=$(echo "$out" | grep '^RSS' | awk '{print int($2 / 1024)}')
  echo "$out" | grep -o 'tok/s [0-9]*' | tail -n +2 | awk -v r="$r" -v k=$((BATCH * SEQ)) '{s += k / $2; n++} END {printf "%.3f %d\n", s / n, r}'
}
echo "libtorch baseline (pzt --version, its freed memory returned): $base MB (kept: $base_kept MB)"
printf '%-24s %10s %10s %12s %8s\n' case "s/step" "peak MB" "above base" "ratio"
for group in plain ckpt lean release; do
  ck='checkpoint_activations = "blocks.*"'; chunk=""
  case $group in
    plain) ck="" ;;
    lean) chunk="loss_chunk_tokens = 64" ;;
    release) chunk="loss_chunk_tokens = 64
release_memory = true" ;;
  esac
  ref=0
  for q in "" 'quantize = "nf4"' 'quantize = "int8"'; do
    name="lora${q:+-${q//[^a-z0-9]/}}-$group"
    read -r s m <<<"$(run "$name" "$q
$ck" "$chunk")"
    above=$((m - base)); [ "$ref" = 0 ] && ref=$above
    printf '%-24s %10s %10s %12s %8s\n' "${name/quantize/}" "$s" "$m" "$above" "$(awk -v a=$above -v b=$ref 'BEGIN {printf "%.2f", a / b}')"
  done
done
