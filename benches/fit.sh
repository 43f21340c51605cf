#!/usr/bin/env bash
# Which strategy fits which card: `pzt plan`'s training-memory estimate for Llama-3 shapes
# (Llama 3.2 1B, Llama 3.1 8B, Llama 3.1 70B; bfloat16 weights, config.json only, no weights
# needed) under full fine-tuning, LoRA and QLoRA (NF4), with and without activation
# checkpointing of every block, one sequence of SEQ tokens (default 2048) per micro-batch,
# AdamW, `precision = "bf16"`. LoRA: rank 16 on the seven projections. Prints a markdown table
# (GiB). Nothing is allocated: the plan builds parameter slots and runs shape inference on
# libtorch's meta device.
# Usage: benches/fit.sh   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ=${SEQ:-2048}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
config() { # NAME HIDDEN LAYERS HEADS INTER TIED
  mkdir -p "$tmp/$1"
  cat > "$tmp/$1/config.json" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": $2,
 "num_hidden_layers": $3, "num_attention_heads": $4, "num_key_value_heads": 8,
 "intermediate_size": $5, "vocab_size": 128256, "max_position_embeddings": 131072,
 "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": $6,
 "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001}
JSON
}
config llama-3.2-1b 2048 16 32 8192 true
config llama-3.1-8b 4096 32 32 14336 false
config llama-3.1-70b 8192 80 64 28672 false
printf 'x\n' > "$tmp/x.txt"
plan() { # MODEL STRATEGY_LINES -> GiB
  local f="$tmp/r.toml"
  cat > "$f" <<TOML
[model]
hf = "$tmp/$1"
dtype = "bfloat16"
[model.input]
axes = { batch = 1, seq = $SEQ }
dtype = "int64"
[data]
source = "text"
files = ["$tmp/x.txt"]
tokenizer = "bytes"
seq_len = $SEQ
[train]
steps = 1
batch_size = 1
precision = "bf16"
$2
TOML
  ./target/release/pzt plan "$f" --json | .venv/bin/python -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["memory_bytes"]["total"] / 2**30))'
}
LORA='[strategy]
kind = "lora"
[strategy.lora]
targets = "all-linear"
rank = 16'
CKPT='checkpoint_activations = "blocks.*"'
echo "| model | full | full + ckpt | LoRA | LoRA + ckpt | QLoRA | QLoRA + ckpt |"
echo "|---|---|---|---|---|---|---|"
for m in llama-3.2-1b llama-3.1-8b llama-3.1-70b; do
  row="| $m"
  row="$row | $(plan $m '') | $(plan $m "[strategy]
$CKPT")"
  row="$row | $(plan $m "$LORA") | $(plan $m "${LORA/kind = \"lora\"/kind = \"lora\"
$CKPT}")"
  row="$row | $(plan $m "${LORA/kind = \"lora\"/kind = \"lora\"
quantize = \"nf4\"}") | $(plan $m "${LORA/kind = \"lora\"/kind = \"lora\"
quantize = \"nf4\"
$CKPT}") |"
  echo "$row"
done
