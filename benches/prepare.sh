#!/usr/bin/env bash
# Preparing a large text corpus: time and peak RSS of `pzt data` (streaming, parallel
# tokenization into the memory-mapped store) on MB megabytes of generated text (16 MB files),
# with the byte-level BPE tokenizer of tests/fixtures/hf/chat-tiny, next to the `tokenizers`
# library driven from Python (encode_batch into a numpy memmap). Dev only: needs transformers
# (for tokenizers and numpy) in .venv.
# Usage: benches/prepare.sh [MB] [DIR]   (after `make build`; default 1024 MB in /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-1024}; DIR=${2:-/tmp/pzt-bench-corpus}
PY=.venv/bin/python
TOK=$PWD/tests/fixtures/hf/chat-tiny/tokenizer.json
[ -f "$DIR/part-000.txt" ] || $PY benches/prepare.py make "$DIR" "$MB"
echo "corpus: $(du -sm "$DIR" --exclude='*.npy' --exclude=run | cut -f1) MB in $(ls "$DIR"/part-*.txt | wc -l) files"
cat > "$DIR/prep.toml" <<TOML
[run]
name = "prep"
out_dir = "$DIR/run"
[data]
source = "text"
files = ["part-*.txt"]
tokenizer = "$TOK"
seq_len = 1024
eval_fraction = 0.001
TOML
rm -rf "$DIR/run"
m() { /usr/bin/time -f "%e s  %M KB" "$@" 2>&1 >/dev/null | tail -1; }
echo "pzt --version (baseline):        $(m ./target/release/pzt --version)"
echo "pzt data (prepare):              $(m ./target/release/pzt data "$DIR/prep.toml")"
echo "pzt data (reuse the store):      $(m ./target/release/pzt data "$DIR/prep.toml")"
du -sh "$DIR"/run/cache/* | sed 's/^/store: /'
echo "python tokenizers (encode_batch): $(m $PY benches/prepare.py tokenize "$DIR" "$TOK")"
rm -f "$DIR/py-tokens.npy"
