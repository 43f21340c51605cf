//! Helpers of the fine-tuning tests (tests/it/strategy.rs, tests/it/peft.rs): the tiny
//! pretrained Llama, LoRA recipes around it, and `pzt logits` into a tensor.
use super::run_pzt;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn base_dir() -> PathBuf {
    root().join("tests/fixtures/hf/llama-lora-base")
}

pub fn reference(case: &str) -> std::collections::BTreeMap<String, Tensor> {
    Tensor::read_safetensors(
        root().join(format!("tests/fixtures/peft/{case}/reference.safetensors")),
    )
    .unwrap()
    .into_iter()
    .collect()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

/// A LoRA run on the tiny pretrained Llama: `extra` is appended (more keys or sections).
pub fn lora_recipe(dir: &Path, base: &Path, steps: u64, extra: &str) -> PathBuf {
    let text = format!(
        r#"[run]
name = "ft"
seed = 2
out_dir = "{out}"

[model]
hf = "{base}"

[data]
source = "synthetic"
generator = "addition"
num_examples = 300
seq_len = 12
tokenizer = "{base}/tokenizer.json"

[train]
steps = {steps}
batch_size = 8
log_every = 5
eval_every = 10
eval_generate = 4
threads = 1

[optim]
lr = 1e-2

[checkpoint]
every_steps = 10
keep_last = 2
{extra}"#,
        out = dir.join("run").display(),
        base = base.display(),
    );
    write(dir, "ft.toml", &text)
}

pub const LORA: &str = r#"
[strategy]
kind = "lora"

[strategy.lora]
targets = ["q_proj", "v_proj", "down_proj"]
rank = 4
alpha = 8.0
dropout = 0.1
"#;

pub fn tokens_of(t: &Tensor) -> String {
    Vec::<i64>::try_from(t.reshape([-1]))
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn logits_of(model: &Path, tokens: &str, dir: &Path) -> Tensor {
    let out = dir.join("logits.safetensors");
    let _ = std::fs::remove_file(&out);
    let (code, o, e) = run_pzt(&[
        "logits",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    Tensor::read_safetensors(&out).unwrap().remove(0).1
}

/// Starts `pzt train RECIPE` in the background (output discarded).
pub fn spawn_train(recipe: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pzt"))
        .args(["train", recipe.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (up to a minute) until `ready()` holds.
pub fn wait_for(ready: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !ready() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
