#!/usr/bin/env bash
# GPU benchmark, for a session lent a device (DESIGN.md, "GPU work"): in one call, pzt and
# PyTorch side by side on a TinyLlama-1.1B-shaped random Llama (22 layers, d2048, 32 query / 4 KV
# heads, MLP 5632, vocab 32000), batch 8 x seq 1024, float32 parameters under bfloat16 autocast:
# pzt full fine-tuning against PyTorch eager and torch.compile, and pzt LoRA (r16, alpha 32, all
# seven projections) against peft. Tokens/s over steps 3..STEPS, MFU against the bf16 dense
# peak (PEAK_TFLOPS, 989 for H100/H200), peak GPU memory (PyTorch: max_memory_allocated; both:
# the most nvidia-smi showed in use, which includes the CUDA context). Prints a table last.
# On the device: build here (`make build`), copy target/release/pzt into gpu-bin/ (git-ignored),
# and run `benches/gpu.sh` with `carry: ["gpu-bin"]`. To try it on the CPU: SHAPE=tiny DEV=cpu
# BATCH=2 SEQ=64 PZT=target/release/pzt benches/gpu.sh (after `source scripts/env.sh`).
set -uo pipefail
cd "$(dirname "$0")/.."
PZT=${PZT:-gpu-bin/pzt}; SHAPE=${SHAPE:-tinyllama}; DEV=${DEV:-cuda}
export BATCH=${BATCH:-8} SEQ=${SEQ:-1024}; STEPS=${STEPS:-10}; PEAK=${PEAK_TFLOPS:-989}
PY=${PY:-python3}
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH=$TORCH_LIB:${LD_LIBRARY_PATH:-}
OUTDIR=${OUT:-/tmp/pzt-gpu-out}; mkdir -p "$OUTDIR"
DIR=/tmp/pzt-gpu-$SHAPE; tmp=$(mktemp -d)
$PY benches/gpu.py make "$DIR" "$SHAPE" || exit 1
FLOPS=$($PY benches/gpu.py flops "$DIR" "$SEQ")
. benches/lib.sh
random_text "$tmp/text.txt" $((BATCH * (SEQ + 1) * (STEPS + 2)))
prec=$([ "$DEV" = cuda ] && echo 'precision = "bf16"' || echo '')
recipe() { # MODE -> recipe file
  local f="$tmp/$1.toml"
  text_recipe "$f" "gpu-$1" "$tmp/run-$1" "$DIR" "$tmp/text.txt" "$SEQ" "$BATCH" "$STEPS" \
    "device = \"$DEV\"
$prec"
  [ "$1" = lora ] && printf '[strategy]\nkind = "lora"\n[strategy.lora]\ntargets = "all-linear"\nrank = 16\nalpha = 32.0\n' >> "$f"
  echo "$f"
}
smi_peak() { # runs "$@" while polling nvidia-smi; prints the command's output, then "SMI_MB n"
  local log="$tmp/smi.$$" pid
  if command -v nvidia-smi >/dev/null && [ "$DEV" = cuda ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$log" 2>/dev/null &
    pid=$!
  fi
  "$@"
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  echo "SMI_MB $(sort -n "$log" 2>/dev/null | tail -1)"
}
pzt_case() { # MODE -> "tok/s MFU% - smi_GiB"
  local out
  out=$(smi_peak "$PZT" train "$(recipe "$1")" 2>&1)
  echo "$out" > "$OUTDIR/pzt-$1.log"
  echo "$out" | grep -o 'tok/s [0-9]*' | tail -n +3 | awk -v k=$((BATCH * SEQ)) -v f="$FLOPS" -v p="$PEAK" \
    -v m="$(echo "$out" | grep '^SMI_MB' | awk '{print $2}')" \
    '{s += k / $2; n++} END {t = n * k / s; printf "%.0f %.1f - %.1f\n", t, 100 * t * f / (p * 1e12), m / 1024}'
}
torch_case() { # MODE -> "tok/s MFU% allocated_GiB smi_GiB"
  local out
  out=$(smi_peak $PY benches/gpu.py train "$DIR" "$1" "$STEPS" "$DEV" 2>&1)
  echo "$out" > "$OUTDIR/torch-$1.log"
  echo "$out" | grep -E '^[0-9.]+ [0-9.]+$' | tail -1 | awk -v f="$FLOPS" -v p="$PEAK" \
    -v m="$(echo "$out" | grep '^SMI_MB' | awk '{print $2}')" \
    '{printf "%.0f %.1f %s %.1f\n", $1, 100 * $1 * f / (p * 1e12), $2, m / 1024}'
}
rows=()
for c in "pzt full:pzt_case full" "PyTorch eager:torch_case eager" "PyTorch torch.compile:torch_case compile" \
         "pzt LoRA:pzt_case lora" "peft LoRA:torch_case peft"; do
  name=${c%%:*}; read -r t m a s <<<"$(${c#*:})"
  rows+=("| $name | ${t:-failed} | ${m:--} | ${a:--} | ${s:--} |")
  echo "$name: ${t:-failed} tok/s" >&2
done
echo
echo "$SHAPE, batch $BATCH x seq $SEQ, $DEV, $(date -u +%F), $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
echo "| case | tokens/s | MFU % | peak allocated GiB | peak in use (nvidia-smi) GiB |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
rm -rf "$tmp"
