//! `pzt generate MODEL (--prompt TEXT | --tokens IDS) [sampling flags]`.

use super::common::{lib_err, load_model, model_tokens, Failure};
use std::io::Write;
use std::path::PathBuf;

/// Generate tokens after a prompt, streaming them as they are sampled (KV cache).
#[derive(clap::Args)]
pub struct Args {
    /// An HF model directory, a recipe, or a run checkpoint directory.
    model: PathBuf,
    /// The prompt text (needs a tokenizer).
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. "1 2 3".
    #[arg(long)]
    tokens: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole sequence every step instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    dtype: Option<String>,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let (m, device) = load_model(&a.model, &a.dtype, &a.device)?;
    let ids = model_tokens(&m, &a.tokens, &a.prompt)?;
    if let Some(p) = a.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Failure::BadInput(format!(
                "--top-p must be in (0, 1], got {p}"
            )));
        }
    }
    let s = pzt::models::generate::Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let mut out = std::io::stdout();
    let text_mode = m.tokenizer.is_some() && a.prompt.is_some();
    if text_mode {
        print!("{}", a.prompt.clone().unwrap_or_default());
    }
    let mut all = vec![];
    let mut shown = String::new();
    pzt::models::generate::generate(
        &m.tree,
        &ids,
        a.max_new_tokens,
        &m.eos,
        &s,
        &m.axes,
        device,
        !a.no_cache,
        |t| {
            all.push(t);
            match (&m.tokenizer, text_mode) {
                (Some(tok), true) => {
                    let text = tok.decode(&all);
                    if text.len() >= shown.len() && text.starts_with(&shown) {
                        print!("{}", &text[shown.len()..]);
                    } else {
                        print!("{text}");
                    }
                    shown = text;
                }
                _ => print!("{t} "),
            }
            let _ = out.flush();
        },
    )
    .map_err(lib_err)?;
    println!();
    Ok(())
}
