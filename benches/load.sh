#!/usr/bin/env bash
# Loading benchmark: peak RSS of loading a ~0.6 GB Llama checkpoint and running 8 tokens, pzt
# side by side with transformers, each against its own baseline (loading libtorch / importing
# transformers). Dev only: needs `transformers` in .venv (see tests/fixtures/make_hf_fixtures.py).
# Usage: benches/load.sh [DIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-/tmp/pzt-bench-llama}
PY=.venv/bin/python
[ -f "$DIR/model.safetensors" ] || $PY benches/load_hf.py make "$DIR" >/dev/null 2>&1
echo "checkpoint: $(du -m "$DIR/model.safetensors" | cut -f1) MB ($DIR)"
m() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }
read -r t0 r0 <<<"$(m ./target/release/pzt --version)"
read -r t1 r1 <<<"$(m ./target/release/pzt logits "$DIR" --tokens "1 2 3 4 5 6 7 8" --device cpu)"
read -r t2 r2 <<<"$(m $PY -c 'import torch, transformers; transformers.LlamaForCausalLM')"
read -r t3 r3 <<<"$(m $PY benches/load_hf.py load "$DIR")"
printf '%-44s %6.2f s %6d MB\n' "pzt --version (baseline)" "$t0" $((r0 / 1024))
printf '%-44s %6.2f s %6d MB  (+%d MB)\n' "pzt logits (load + 8 tokens)" "$t1" $((r1 / 1024)) $(((r1 - r0) / 1024))
printf '%-44s %6.2f s %6d MB\n' "import torch, transformers (baseline)" "$t2" $((r2 / 1024))
printf '%-44s %6.2f s %6d MB  (+%d MB)\n' "transformers from_pretrained + 8 tokens" "$t3" $((r3 / 1024)) $(((r3 - r2) / 1024))
