#!/usr/bin/env bash
# `make bench`: every benchmark, pzt side by side with PyTorch, in one invocation. Dev only,
# never in CI. Prints the machine, then each case's table; the training cases end with one
# markdown table (pzt, PyTorch eager, ratio) to paste into benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(uname -m), $(date -u +%F); $(./target/release/pzt --version | sed -n 2p)"
echo "PyTorch: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
rows=()
for size in small large; do
  echo "== training, $size (runs alternate; best of ${RUNS:-3})"
  rows+=("$(benches/train_speed.sh "$size")")
done
echo "== training on a busy machine (one core taken by a busy loop)"
benches/busy.sh
echo "== generation"
rows+=("$(benches/generate.sh)")
echo "== fine-tuning: full and LoRA steps, with and without activation checkpointing"
benches/finetune.sh
echo "== loading a Hugging Face checkpoint"
benches/load.sh
echo "== planning Llama-2-7B"
benches/plan.sh
echo "== data-parallel training (pzt --nproc 2 against PyTorch DDP under torchrun)"
benches/ddp.sh
echo
echo "| case | pzt | PyTorch eager | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
