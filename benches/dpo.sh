#!/usr/bin/env bash
# DPO benchmark: a LoRA DPO step of pzt against TRL's DPOTrainer, side by side, on the same
# random Llama (benches/finetune.py make: 27.5M parameters, float32, a byte-level tokenizer),
# the same plain preference rows (benches/dpo.py rows: 256 pairs, prompts and completions of
# about 60 characters), BATCH pairs per step (default 4), rank-16 LoRA on the seven projections,
# AdamW, 2 threads, in float32 and under bfloat16 autocast (pzt `precision = "bf16"`, TRL's
# default `bf16 = True`); both references are the model with the adapters off. Time: mean
# seconds per step (steps 2..N); memory: peak RSS.
# Dev only: needs transformers, peft, datasets and trl in .venv.
# Usage: benches/dpo.sh [STEPS] [DIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-8}; DIR=${2:-/tmp/pzt-bench-ft}
export BATCH=${BATCH:-4}
PY=.venv/bin/python
[ -f "$DIR/model.safetensors" ] || $PY benches/finetune.py make "$DIR" >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
PYTHONPATH=benches $PY benches/dpo.py rows "$tmp/pairs.jsonl"
recipe() { # STEPS -> recipe path
  local f="$tmp/dpo-$1.toml"
  cat > "$f" <<TOML
[run]
name = "dpo-$1"
out_dir = "$tmp/run-$1"
[model]
hf = "$DIR"
[data]
source = "preference"
files = ["$tmp/pairs.jsonl"]
seq_len = 256
eval_fraction = 0.0
cache_dir = "$tmp/cache"
[objective]
kind = "dpo"
beta = 0.1
[strategy]
kind = "lora"
[strategy.lora]
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
rank = 16
alpha = 32.0
[train]
steps = $1
batch_size = $BATCH
log_every = 1000
threads = 2
[optim]
lr = 1e-4
[checkpoint]
every_steps = 1000000
TOML
  echo "$f"
}
# The training loop's time of a run (pzt's `done: ... in X s`).
loop_s() { ./target/release/pzt train "$1" 2>&1 | grep -o 'in [0-9.]* s' | awk '{print $2}'; }
./target/release/pzt data "$(recipe 1)" >/dev/null
printf '%-16s %12s %8s %12s %8s\n' case "pzt s/step" "pzt MB" "TRL s/step" "TRL MB"
for prec in fp32 bf16; do
  line="precision = \"$prec\""
  [ "$prec" = fp32 ] && line=""
  r1=$(recipe 1); rn=$(recipe "$N")
  sed -i "s/^threads = 2$/threads = 2\n$line/" "$r1" "$rn"
  one=$(loop_s "$r1")
  out=$(/usr/bin/time -f "RSS %M" ./target/release/pzt train "$rn" 2>&1)
  all=$(echo "$out" | grep -o 'in [0-9.]* s' | awk '{print $2}')
  pm=$(( $(echo "$out" | grep '^RSS' | awk '{print $2}') / 1024 ))
  ps=$(awk -v a="$all" -v b="$one" -v n="$N" 'BEGIN {printf "%.3f", (a - b) / (n - 1)}')
  out=$(PRECISION=$prec PYTHONPATH=benches /usr/bin/time -f "RSS %M" $PY benches/dpo.py train "$DIR" "$tmp/pairs.jsonl" "$N" 2>&1)
  ts=$(echo "$out" | grep -E '^[0-9.]+$' | tail -1)
  tm=$(( $(echo "$out" | grep '^RSS' | awk '{print $2}') / 1024 ))
  printf '%-16s %12s %8s %12s %8s\n' "dpo-lora $prec" "$ps" "$pm" "$ts" "$tm"
  rm -rf "$tmp"/run-*
done
