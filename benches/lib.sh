# Sourced by the benchmark scripts: what they share.

# text_recipe FILE NAME OUT_DIR MODEL_DIR TEXT SEQ BATCH STEPS [TRAIN_LINE]: writes a recipe that
# trains the HF model in MODEL_DIR on the text file TEXT (its tokenizer.json), logging every
# step, never evaluating, never checkpointing; TRAIN_LINE is added to [train] (`threads = 2`).
text_recipe() {
  cat > "$1" <<TOML
[run]
name = "$2"
out_dir = "$3"
[model]
hf = "$4"
[data]
source = "text"
files = ["$5"]
tokenizer = "$4/tokenizer.json"
seq_len = $6
eval_fraction = 0.0
[train]
steps = $8
batch_size = $7
log_every = 1
${9:-}
[optim]
lr = 1e-4
[checkpoint]
every_steps = 1000000
TOML
}

# random_text FILE BYTES: random base64 text, in lines of 1000 characters.
random_text() {
  head -c "$2" /dev/urandom | base64 -w 0 | fold -w 1000 > "$1"
}
