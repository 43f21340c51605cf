#!/usr/bin/env bash
# Recipe handling on wide and deep trees (the hardening issue's super-linear cases):
#   benches/wide_tree.sh [N_CHILDREN] [N_WRAPS]
# Writes the recipes to a temporary directory and times `pzt plan` / `pzt select` on them.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-80000}
w=${2:-2000}
pzt=./target/release/pzt
d=$(mktemp -d)
python3 - "$d" "$n" "$w" <<'PY'
import sys
d, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
head = '[run]\nname = "wide"\n[model]\ntype = "Sequential"\ninput = { axes = { batch = 2, x = 4 }, dtype = "float32" }\n'
kids = "".join(f'children.c{i} = {{ type = "Identity" }}\n' for i in range(n))
open(f"{d}/children.toml", "w").write(head + kids)
patch = '[[patch]]\nselect = "Identity"\naction = "insert_after"\nwith = { type = "Identity" }\n'
open(f"{d}/insert.toml", "w").write(head + kids + patch)
wrap = '[[patch]]\nselect = "lm_head"\naction = "wrap"\nwith = { type = "Sequential" }\n'
base = open("recipes/quickstart.toml").read()
open(f"{d}/wrap.toml", "w").write(base + wrap * w)
PY
t() { /usr/bin/time -f "%e s  %M KB  exit %x  $*" "$@" > /dev/null 2> "$d/err" || true; tail -1 "$d/err" >> "$d/times"; }
t $pzt plan "$d/children.toml"
t $pzt select "$d/children.toml" Identity
t $pzt plan "$d/insert.toml"
t $pzt plan "$d/wrap.toml"
cat "$d/times"
rm -rf "$d"
