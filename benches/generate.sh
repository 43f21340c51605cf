#!/usr/bin/env bash
# Greedy generation with the KV cache, pzt side by side with transformers `generate`: N new
# tokens (default 128) after an 8-token prompt, on the small random Llama of train_speed.sh,
# 2 threads. pzt's time is `pzt generate` minus `pzt logits` on the prompt (loading the model
# and libtorch, and the prompt's forward), best of RUNS; PyTorch's is the `generate` call
# alone, best of two. Also says whether both picked the same tokens.
# Dev only: needs transformers in .venv. Usage: benches/generate.sh   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-128}; RUNS=${RUNS:-3}; export THREADS=${THREADS:-2}
PY=.venv/bin/python
DIR=/tmp/pzt-bench-train-small
[ -f "$DIR/model.safetensors" ] || $PY benches/train_speed.py make "$DIR" small >/dev/null 2>&1
# No end token: both sides generate exactly N tokens.
GEN=/tmp/pzt-bench-generate
rm -rf "$GEN"; cp -r "$DIR" "$GEN"
$PY - "$GEN/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c.pop("eos_token_id", None); json.dump(c, open(p, "w"))
PY
PROMPT="5 17 33 2 90 41 7 64"
t() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
best=""
for _ in $(seq "$RUNS"); do
  g=$(t ./target/release/pzt generate "$GEN" --tokens "$PROMPT" --max-new-tokens "$N" --device cpu)
  l=$(t ./target/release/pzt logits "$GEN" --tokens "$PROMPT" --device cpu)
  d=$(awk -v g="$g" -v l="$l" 'BEGIN {print g - l}')
  best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -g | head -1)
done
pzt_ids=$(./target/release/pzt generate "$GEN" --tokens "$PROMPT" --max-new-tokens "$N" --device cpu | tr -s ' ' | sed 's/ *$//')
out=$($PY benches/generate.py "$GEN" "$N" $PROMPT 2>/dev/null)
torch_tps=$(echo "$out" | sed -n 1p)
torch_ids=$(echo "$out" | sed -n 2p)
pzt_tps=$(awk -v n="$N" -v s="$best" 'BEGIN {printf "%.1f", n / s}')
same=$([ "$pzt_ids" = "$torch_ids" ] && echo "same tokens" || echo "tokens differ")
ratio=$(awk -v a="$pzt_tps" -v b="$torch_tps" 'BEGIN {printf "%.2f", a / b}')
printf '| generate %d tokens (small, greedy, KV cache, %s threads; %s) | %s tok/s | %s tok/s | %sx |\n' \
  "$N" "$THREADS" "$same" "$pzt_tps" "$torch_tps" "$ratio"
