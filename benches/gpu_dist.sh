#!/usr/bin/env bash
# The data-parallel GPU check, for a session lent a device (DESIGN.md, "GPU work"): NCCL's
# process group against Gloo's and against no group at all, on the one GPU. Each case trains the
# quickstart recipe for STEPS steps on DEV as a world of one (RANK=0 WORLD_SIZE=1 with
# MASTER_ADDR/MASTER_PORT set, as torchrun --nproc-per-node 1 does, so that the store, the
# gradient reducer and the control all-reduces run), in float32 and under bf16 autocast. It
# prints, per precision, the largest per-step loss difference from the run without a group, the
# final eval.loss, and tokens/s over the last half of the steps; then a table.
# On the device: build here (`make build`), copy target/release/pzt into gpu-bin/ (git-ignored),
# and run `benches/gpu_dist.sh` with `carry: ["gpu-bin"]`. To try it on the CPU:
# DEV=cpu PZT=target/release/pzt benches/gpu_dist.sh (NCCL is then skipped: it needs a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
PZT=${PZT:-gpu-bin/pzt}; DEV=${DEV:-cuda}; STEPS=${STEPS:-200}
PY=${PY:-python3}
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH=$TORCH_LIB:${LD_LIBRARY_PATH:-}
OUTDIR=${OUT:-/tmp/pzt-gpu-dist-out}; mkdir -p "$OUTDIR"
tmp=$(mktemp -d)
port=29611
run() { # NAME PRECISION BACKEND(none|gloo|nccl) -> the run's out_dir (log in OUTDIR/NAME.log)
  local out="$tmp/$1" env=()
  if [ "$3" != none ]; then
    port=$((port + 1))
    env=(RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port)
  fi
  env "${env[@]}" "$PZT" train recipes/quickstart.toml --set run.out_dir="\"$out\"" \
    --set train.steps="$STEPS" --set train.log_every=1 --set train.eval_every=0 \
    --set train.device="\"$DEV\"" --set train.precision="\"$2\"" \
    --set train.distributed_backend="\"$([ "$3" = none ] && echo auto || echo "$3")\"" \
    > "$OUTDIR/$1.log" 2>&1 || echo "FAILED (see $OUTDIR/$1.log)" >&2
  echo "$out"
}
compare() { # BASE_DIR DIR -> "max|loss diff| final_eval_loss tok/s"
  $PY - "$1" "$2" <<'PY'
import json, sys
def rows(d):
    try:
        return [json.loads(l) for l in open(d + "/metrics.jsonl")]
    except OSError:
        return []
a, b = rows(sys.argv[1]), rows(sys.argv[2])
la = {r["step"]: r["loss"] for r in a if "loss" in r}
lb = {r["step"]: r["loss"] for r in b if "loss" in r}
if not lb:
    print("failed - -"); sys.exit()
diff = max(abs(la[s] - lb[s]) for s in lb if s in la) if la else float("nan")
ev = [r["eval.loss"] for r in b if "eval.loss" in r]
tps = [r["tokens_per_s"] for r in b if "tokens_per_s" in r]
half = tps[len(tps) // 2:]
print(f"{diff:.2e} {ev[-1] if ev else float('nan'):.4f} {sum(half) / max(len(half), 1):.0f}")
PY
}
rows=()
for prec in fp32 bf16; do
  base=$(run "none-$prec" "$prec" none)
  for be in none gloo nccl; do
    if [ "$be" = nccl ] && [ "$DEV" != cuda ]; then
      rows+=("| $prec | nccl | n/a on $DEV | | |"); continue
    fi
    d=$base
    [ "$be" != none ] && d=$(run "$be-$prec" "$prec" "$be")
    read -r diff ev tps <<<"$(compare "$base" "$d")"
    rows+=("| $prec | $be | $diff | $ev | $tps |")
    echo "$prec $be: max loss diff $diff, eval.loss $ev, $tps tok/s" >&2
  done
done
echo
echo "quickstart, $STEPS steps, world of one on $DEV, $(date -u +%F), $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
echo "| precision | process group | max loss difference per step (vs no group) | final eval.loss | tokens/s |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
rm -rf "$tmp"
