//! A tiny transformer language-model run, for tests of the training command's edges.
use std::path::{Path, PathBuf};

/// A fresh temporary directory `pzt-<group>-<name>-<pid>`.
/// A tiny transformer LM recipe (`dir/t.toml`) training `steps` steps into `dir/run`,
/// checkpointing every 2 steps; `extra` is appended.
pub fn recipe(dir: &Path, steps: u64, extra: &str) -> PathBuf {
    let text = format!(
        r#"[run]
name = "t"
seed = 0
out_dir = "{out}"
[model]
builder = "transformer"
vocab_size = 256
d_model = 16
num_layers = 1
num_heads = 2
mlp_hidden = 32
input = {{ axes = {{ batch = 4, seq = 12 }}, dtype = "int64" }}
[data]
source = "synthetic"
generator = "addition"
max_digits = 2
num_examples = 200
seq_len = 12
eval_fraction = 0.1
[train]
steps = {steps}
batch_size = 4
log_every = 1
eval_every = 2
[optim]
kind = "adamw"
lr = 3e-3
[checkpoint]
every_steps = 2
keep_last = 2
{extra}
"#,
        out = dir.join("run").display()
    );
    let f = dir.join("t.toml");
    std::fs::write(&f, text).unwrap();
    f
}
