#!/usr/bin/env bash
# Fine-tuning benchmark: a LoRA step vs a full step, with and without activation
# checkpointing, pzt side by side with transformers + peft, on the same random Llama
# (27.5M parameters, float32), BATCH x SEQ tokens (default 4 x 128), AdamW, rank-16 LoRA on all seven
# projections of every layer. Time: mean seconds per step (steps 2..N); memory: peak RSS.
# Dev only: needs transformers and peft in .venv.
# Usage: benches/finetune.sh [STEPS] [DIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-6}; DIR=${2:-/tmp/pzt-bench-ft}
export BATCH=${BATCH:-4} SEQ=${SEQ:-128}
PY=.venv/bin/python
[ -f "$DIR/model.safetensors" ] || $PY benches/finetune.py make "$DIR" >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -c 150000 /dev/urandom | base64 -w 0 | fold -w 100 > "$tmp/text.txt"
. benches/lib.sh
recipe() { # MODE -> recipe path
  local f="$tmp/$1.toml"
  text_recipe "$f" "$1" "$tmp/run-$1" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$N" "threads = 2"
  case $1 in
    full) ;;
    lora) printf '[strategy]\nkind = "lora"\n[strategy.lora]\ntargets = "all-linear"\nrank = 16\nalpha = 32.0\n' >> "$f";;
    full-ckpt) printf '[strategy]\ncheckpoint_activations = "blocks.*"\n' >> "$f";;
    lora-ckpt) printf '[strategy]\nkind = "lora"\ncheckpoint_activations = "blocks.*"\n[strategy.lora]\ntargets = "all-linear"\nrank = 16\nalpha = 32.0\n' >> "$f";;
  esac
  echo "$f"
}
# Seconds per step from pzt's log: BATCH * SEQ tokens / tok/s of each logged step after the first.
pzt_step() { # RECIPE -> "seconds_per_step peak_MB"
  local out rss
  out=$(/usr/bin/time -f "RSS %M" ./target/release/pzt train "$1" 2>&1)
  rss=$(echo "$out" | grep '^RSS' | awk '{print $2}')
  echo "$out" | grep -o 'tok/s [0-9]*' | tail -n +2 | awk -v r="$rss" -v k=$((BATCH * SEQ)) '{s += k / $2; n++} END {printf "%.3f %d\n", s / n, r / 1024}'
}
torch_step() { # MODE -> "seconds_per_step peak_MB"
  local out
  out=$(THREADS=2 /usr/bin/time -f "RSS %M" $PY benches/finetune.py train "$DIR" "$1" "$N" 2>&1)
  echo "$(echo "$out" | grep -E '^[0-9.]+$' | tail -1) $(( $(echo "$out" | grep '^RSS' | awk '{print $2}') / 1024 ))"
}
printf '%-10s %14s %10s %16s %10s\n' mode "pzt s/step" "pzt MB" "PyTorch s/step" "PyTorch MB"
for m in full lora full-ckpt lora-ckpt; do
  read -r ps pm <<<"$(pzt_step "$(recipe $m)")"
  read -r ts tm <<<"$(torch_step $m)"
  printf '%-10s %14s %10s %16s %10s\n' "$m" "$ps" "$pm" "$ts" "$tm"
done
