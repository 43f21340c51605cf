#!/usr/bin/env bash
# Training speed, pzt side by side with PyTorch eager (transformers LlamaForCausalLM, SDPA
# attention, torch.optim.AdamW) on the same random Llama checkpoint, the same batch shape and
# thread count. Runs alternate (pzt, PyTorch, pzt, ...); each side's best tokens/s over RUNS runs
# (steps 2..STEPS of each run) and its peak RSS are printed, with the ratio.
# Dev only: needs transformers in .venv (`make bench` installs it).
# Usage: benches/train_speed.sh SIZE   (small: 4 layers d256, batch 8 x seq 128;
#        large: 12 layers d768, batch 4 x seq 512; qwen3: a Qwen 3 of the small sizes, GQA
#        8/4 heads of 32, QK-norm, batch 8 x seq 128; qwen3-moe: that attention and 8 experts
#        of 256, 2 per token, in every layer, with the load-balancing loss on both sides).
#        Env: RUNS (3), STEPS (8 small, 4 large), THREADS (2), EXPERTS (transformers' experts
#        implementation for qwen3-moe: eager, the default here, loops over the experts).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-small}
case $SIZE in
  small|qwen3|qwen3-moe) export BATCH=8 SEQ=128; STEPS=${STEPS:-8};;
  large) export BATCH=4 SEQ=512; STEPS=${STEPS:-4};;
  *) echo "size: small, large, qwen3 or qwen3-moe" >&2; exit 2;;
esac
RUNS=${RUNS:-3}; export THREADS=${THREADS:-2}
[ "$SIZE" = qwen3-moe ] && export EXPERTS=${EXPERTS:-eager}
PY=.venv/bin/python
DIR=/tmp/pzt-bench-train-$SIZE
[ -f "$DIR/model.safetensors" ] || $PY benches/train_speed.py make "$DIR" "$SIZE" >/dev/null 2>&1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Enough random text for every step (bytes of base64: one token each with the byte tokenizer).
. benches/lib.sh
random_text "$tmp/text.txt" $((BATCH * (SEQ + 1) * (STEPS + 2)))
text_recipe "$tmp/r.toml" "speed-$SIZE" "$tmp/run" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$STEPS" "threads = $THREADS"
pzt_run() { # -> "tokens_per_s peak_MB": tokens over the time of steps 2..STEPS
  rm -rf "$tmp/run"
  local out rss
  out=$(/usr/bin/time -f "RSS %M" ./target/release/pzt train "$tmp/r.toml" 2>&1)
  rss=$(echo "$out" | grep '^RSS' | awk '{print $2}')
  echo "$out" | grep -o 'tok/s [0-9]*' | tail -n +2 | awk -v r="$rss" -v k=$((BATCH * SEQ)) \
    '{s += k / $2; n++} END {printf "%.1f %d\n", n * k / s, r / 1024}'
}
torch_run() {
  local out
  out=$(/usr/bin/time -f "RSS %M" $PY benches/train_speed.py train "$DIR" "$STEPS" 2>&1)
  echo "$(echo "$out" | grep -E '^[0-9.]+$' | tail -1) $(( $(echo "$out" | grep '^RSS' | awk '{print $2}') / 1024 ))"
}
best_p=0; best_t=0; rss_p=0; rss_t=0
for i in $(seq "$RUNS"); do
  read -r p pm <<<"$(pzt_run)"
  read -r t tm <<<"$(torch_run)"
  echo "  run $i: pzt $p tok/s ($pm MB), PyTorch $t tok/s ($tm MB)" >&2
  if awk -v a="$p" -v b="$best_p" 'BEGIN {exit !(a > b)}'; then best_p=$p; rss_p=$pm; fi
  if awk -v a="$t" -v b="$best_t" 'BEGIN {exit !(a > b)}'; then best_t=$t; rss_t=$tm; fi
done
ratio=$(awk -v a="$best_p" -v b="$best_t" 'BEGIN {printf "%.2f", a / b}')
printf '| train %s (batch %d x seq %d, %s threads) | %s tok/s, %s MB | %s tok/s, %s MB | %sx |\n' \
  "$SIZE" "$BATCH" "$SEQ" "$THREADS" "$best_p" "$rss_p" "$best_t" "$rss_t" "$ratio"
