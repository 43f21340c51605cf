#!/usr/bin/env bash
# Big-vocabulary benchmark: a LoRA step of a model with a 151,936-token vocabulary (Qwen's) at
# batch 4 x 512, pzt (chunked loss) side by side with transformers + peft, on the same random
# Qwen 3 (benches/bigvocab.py make: hidden 256, 2 layers, untied head, float32), rank-16 LoRA on
# the seven projections, AdamW, 2 threads. Time: mean seconds per step (steps 2..N). Memory
# above the baseline: the peak RSS of the 4 x 512 run minus that of the same run at 1 x 8
# (the same process, model and optimizer; what the batch's activations, logits and gradients
# take). Dev only: needs transformers and peft in .venv.
# Usage: benches/bigvocab.sh [STEPS] [DIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}; DIR=${2:-/tmp/pzt-bench-bigvocab}
PY=.venv/bin/python
[ -f "$DIR/model.safetensors" ] || PYTHONPATH=benches $PY benches/bigvocab.py make "$DIR" >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. benches/lib.sh
random_text "$tmp/text.txt" 300000
rss() { grep '^RSS' | awk '{print int($2 / 1024)}'; }
pzt_run() { # BATCH SEQ [TRAIN_LINE] -> "seconds_per_step peak_MB"
  local f="$tmp/r-$1-$2.toml" out r
  text_recipe "$f" "bv" "$tmp/run-$1-$2" "$DIR" "$tmp/text.txt" "$2" "$1" "$N" "threads = 2
${3:-}"
  printf '[strategy]\nkind = "lora"\n[strategy.lora]\ntargets = "all-linear"\nrank = 16\nalpha = 32.0\n' >> "$f"
  rm -rf "$tmp/run-$1-$2"
  out=$(/usr/bin/time -f "RSS %M" ./target/release/pzt train "$f" 2>&1)
  r=$(echo "$out" | rss)
  echo "$out" | grep -o 'tok/s [0-9]*' | tail -n +2 | awk -v r="$r" -v k=$(($1 * $2)) '{s += k / $2; n++} END {printf "%.3f %d\n", s / n, r}'
}
torch_run() { # BATCH SEQ -> "seconds_per_step peak_MB"
  local out
  out=$(PYTHONPATH=benches /usr/bin/time -f "RSS %M" $PY benches/bigvocab.py train "$DIR" "$N" "$1" "$2" 2>&1)
  echo "$(echo "$out" | grep -E '^[0-9.]+$' | tail -1) $(echo "$out" | rss)"
}
read -r _ pb <<<"$(pzt_run 1 8)"
read -r ps pm <<<"$(pzt_run 4 512)"
read -r _ cb <<<"$(pzt_run 1 8 'loss_chunk_tokens = 1000000')"
read -r cs cm <<<"$(pzt_run 4 512 'loss_chunk_tokens = 1000000')"
read -r _ tb <<<"$(torch_run 1 8)"
read -r ts tm <<<"$(torch_run 4 512)"
printf '%-34s %10s %10s %14s\n' case "s/step" "peak MB" "above 1x8 MB"
printf '%-34s %10s %10s %14s\n' "pzt (chunked loss)" "$ps" "$pm" "$((pm - pb))"
printf '%-34s %10s %10s %14s\n' "pzt (one chunk: whole logits)" "$cs" "$cm" "$((cm - cb))"
printf '%-34s %10s %10s %14s\n' "transformers + peft" "$ts" "$tm" "$((tm - tb))"
