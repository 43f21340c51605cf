#!/usr/bin/env bash
# Planning benchmark: `pzt plan` on a Llama-2-7B-sized recipe (shapes only, on the meta
# device) side by side with PyTorch building the same shapes on its meta device.
# Reports wall time and peak RSS (GNU time) for each, plus the cost of just loading libtorch.
# Usage: benches/plan.sh   (after `make build`; RUNS=N to change the repeat count)
set -euo pipefail
cd "$(dirname "$0")/.."
PZT=./target/release/pzt
PY=.venv/bin/python
runs=${RUNS:-5}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
echo "machine: $(nproc) cores, $(uname -m); $($PZT --version | sed -n 2p)"
echo "runs: $runs each; best wall time, and the peak RSS of that run"
measure() {
  local name=$1; shift
  local best=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -o "$tmp" -f "%e %M" "$@" >/dev/null 2>&1
    best=$(printf '%s\n%s\n' "$best" "$(cat "$tmp")" | sed '/^$/d' | sort -g | head -1)
  done
  read -r wall rss <<<"$best"
  printf '%-42s %6.2f s  %5d MB peak RSS\n' "$name" "$wall" "$((rss / 1024))"
}
measure "pzt --version (loads libtorch only)" $PZT --version
measure "pzt plan recipes/llama2-7b.toml" $PZT plan recipes/llama2-7b.toml
measure "python -c 'import torch'" $PY -c "import torch"
measure "PyTorch: Llama-2-7B on the meta device" $PY benches/plan_llama7b.py
$PZT plan recipes/llama2-7b.toml --json | $PY -c 'import json, sys; print("pzt parameter count: {:,}".format(json.load(sys.stdin)["parameters"]["total"]))'
$PY benches/plan_llama7b.py
