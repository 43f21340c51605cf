//! `pzt init OUT.toml --model HF_DIR --data FILE [--strategy S] [--name NAME] [--force]`: a
//! commented starter recipe (like torchtune's `tune cp` or LLaMA-Factory's examples) for
//! fine-tuning a Hugging Face model directory on a data file, its format read from the file.

use super::common::{lib_err, Failure};
use std::path::{Path, PathBuf};

/// Write a commented starter recipe to fine-tune an HF model directory on a data file (its
/// format found from the file: chat messages, prompt/completion, text lines, parquet).
#[derive(clap::Args)]
pub struct Args {
    /// The recipe file to write (refused if it exists, unless --force).
    out: PathBuf,
    /// The Hugging Face model directory (config.json, safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The training data: .jsonl ({"messages": [...]}, {"prompt", "completion"} or {"text"}),
    /// .parquet, or plain text.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// How to fine-tune.
    #[arg(long, value_enum, default_value = "lora")]
    strategy: Strategy,
    /// The run's name (default: the recipe file's name).
    #[arg(long)]
    name: Option<String>,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Strategy {
    /// LoRA adapters on every Linear but the output head; the rest frozen.
    Lora,
    /// DoRA: LoRA with a learned magnitude per output.
    Dora,
    /// Every parameter trains.
    Full,
}

/// The data format of a file, as recipe lines for `[data]`.
fn data_lines(file: &Path) -> Result<(String, &'static str), Failure> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if ext == "parquet" {
        return Ok((
            "source = \"parquet\"                      # rows with `messages` are conversations; else `text` or `prompt`/`completion`".into(),
            "parquet",
        ));
    }
    let text = head(file)?;
    if ext == "jsonl" || ext == "json" {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let row: serde_json::Value = serde_json::from_str(first).map_err(|e| {
            Failure::BadInput(format!(
                "--data {}: the first line is not a JSON object: {e}",
                file.display()
            ))
        })?;
        let has = |k: &str| row.get(k).is_some();
        return if has("messages") {
            Ok(("source = \"chat\"                          # conversations, rendered with the model's chat template\ntrain_on = \"assistant\"                    # the loss covers the assistant turns".into(), "chat"))
        } else if has("prompt") && has("completion") {
            Ok(("source = \"jsonl\"                         # prompt/completion rows: the loss covers the completion".into(), "prompt/completion"))
        } else if has("text") {
            Ok(("source = \"jsonl\"                         # one text per row, the loss on all of it".into(), "text rows"))
        } else {
            Err(Failure::BadInput(format!(
                "--data {}: the rows have none of `messages`, `prompt`+`completion` or `text`; see docs/data.md for the formats",
                file.display()
            )))
        };
    }
    Ok((
        "source = \"text\"                          # plain text, cut into windows of seq_len tokens".into(),
        "text",
    ))
}

/// The first MiB of a regular file (enough for its first rows), as text.
fn head(file: &Path) -> Result<String, Failure> {
    use std::io::Read;
    let shown = file.display();
    let meta =
        std::fs::metadata(file).map_err(|e| Failure::BadInput(format!("--data {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(Failure::BadInput(format!(
            "--data {shown}: not a regular file"
        )));
    }
    let mut bytes = vec![];
    std::fs::File::open(file)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut bytes))
        .map_err(|e| Failure::BadInput(format!("--data {shown}: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `path` as written in a recipe at `out` (relative to its directory when possible).
fn relative(path: &Path, out: &Path) -> String {
    let abs = |p: &Path| pzt::base::outputs::resolve(p);
    let (p, dir) = (abs(path), abs(out.parent().unwrap_or(Path::new("."))));
    let shown = match p.strip_prefix(&dir) {
        Ok(r) => r.to_path_buf(),
        Err(_) => {
            // Up from the recipe's directory to the common ancestor.
            let common: PathBuf = p
                .components()
                .zip(dir.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect();
            let ups = dir.components().count() - common.components().count();
            if ups > 2 || common.components().count() <= 1 {
                return toml::Value::String(p.display().to_string()).to_string();
            }
            let mut r: PathBuf = std::iter::repeat_n("..", ups).collect();
            r.push(p.strip_prefix(&common).unwrap_or(&p));
            r
        }
    };
    toml::Value::String(shown.display().to_string()).to_string()
}

fn strategy_lines(s: Strategy) -> &'static str {
    match s {
        Strategy::Full => "[strategy]\nkind = \"full\"                            # every parameter trains; freeze = [\"...\"] to freeze some\n",
        Strategy::Lora | Strategy::Dora => "[strategy]\nkind = \"lora\"                            # the adapters train; every other parameter is frozen\n\n[strategy.lora]\ntargets = [\"all-linear\"]                 # HF module names (q_proj, v_proj, ...), selectors, or \"all-linear\"\nrank = 16\nalpha = 32.0\ndropout = 0.05\n",
    }
}

/// The recipe `pzt init` writes.
fn recipe_text(a: &Args, data: &str, format: &str) -> String {
    let name = a.name.clone().unwrap_or_else(|| {
        a.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    });
    let mut s = strategy_lines(a.strategy).to_string();
    if a.strategy == Strategy::Dora {
        s.push_str(
            "dora = true                              # DoRA: a learned magnitude per output\n",
        );
    }
    format!(
        "# A starter recipe written by `pzt init`: {strategy} fine-tuning of {model} on {data_file}
# ({format}). Check it with `pzt plan` and `pzt data --show 2`, then `pzt train`; every key is
# described in docs/recipes.md, docs/data.md, docs/training.md and docs/strategies.md.
[run]
name = {name}
seed = 0                                  # parameters, data order and dropout follow from it

[model]
hf = {model_path}

{s}
[data]
{data}
files = [{data_path}]
seq_len = 512                             # tokens per example; longer ones are skipped (overflow)
eval_fraction = 0.05                      # held out for `eval.*` metrics

[train]
steps = 1000
batch_size = 8
grad_accum = 1                            # micro-batches per step (a larger batch in the same memory)
log_every = 10
eval_every = 200
precision = \"fp32\"                        # \"bf16\" autocast on a GPU that has it

[optim]
kind = \"adamw\"
lr = {lr}
schedule = \"cosine\"
warmup_steps = 50
clip_grad_norm = 1.0

[checkpoint]
every_steps = 200
keep_last = 2
keep_best = \"eval.loss\"                   # `pzt eval RECIPE --checkpoint best`, `RUN@best`
",
        strategy = match a.strategy {
            Strategy::Lora => "LoRA",
            Strategy::Dora => "DoRA",
            Strategy::Full => "full",
        },
        model = a.model.display(),
        data_file = a.data.display(),
        name = toml::Value::String(name),
        model_path = relative(&a.model, &a.out),
        data_path = relative(&a.data, &a.out),
        lr = if a.strategy == Strategy::Full { "2e-5" } else { "2e-4" },
    )
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.out.exists() && !a.force {
        return Err(Failure::BadInput(format!(
            "{} exists; choose another file or pass --force",
            a.out.display()
        )));
    }
    pzt::base::outputs::Outputs::new()
        .input(&a.model)
        .input(&a.data)
        .output("OUT", &a.out)
        .check()
        .map_err(lib_err)?;
    if pzt::run::model_path::model_path(&a.model).map_err(lib_err)?
        != pzt::run::model_path::ModelPath::Hf
    {
        return Err(Failure::BadInput(format!(
            "--model {}: not a Hugging Face model directory (config.json)",
            a.model.display()
        )));
    }
    let (data, format) = data_lines(&a.data)?;
    let text = recipe_text(&a, &data, format);
    pzt::base::outputs::write(&a.out, text.as_bytes()).map_err(lib_err)?;
    println!(
        "wrote {} ({} fine-tuning, {format} data); next: pzt plan {}",
        a.out.display(),
        match a.strategy {
            Strategy::Lora => "LoRA",
            Strategy::Dora => "DoRA",
            Strategy::Full => "full",
        },
        a.out.display()
    );
    Ok(())
}
