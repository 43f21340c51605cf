//! `pzt generate MODEL (--prompt TEXT [--chat] | --tokens IDS) [sampling flags]`.

use super::common::{lib_err, load_model, model_tokens, Failure};
use std::io::Write;
use std::path::PathBuf;

/// Generate tokens after a prompt, streaming them as they are sampled (KV cache).
#[derive(clap::Args)]
pub struct Args {
    /// An HF model directory, a recipe, or a run checkpoint directory.
    model: PathBuf,
    /// The prompt text (needs a tokenizer); `--text` is the same.
    #[arg(long, visible_alias = "text", conflicts_with = "tokens")]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. "1 2 3".
    #[arg(long)]
    tokens: Option<String>,
    /// Render the prompt as a user message with the chat template (and its generation
    /// prompt); generation stops at the template's end-of-turn token.
    #[arg(long, requires = "prompt")]
    chat: bool,
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
    let (mut m, device) = load_model(&a.model, &a.dtype, &a.device)?;
    let mut prompt = a.prompt.clone();
    if a.chat {
        let tok = m.tokenizer.as_ref().ok_or_else(|| {
            Failure::BadInput("--chat needs a tokenizer (the model's, or the recipe's)".into())
        })?;
        let source = m.chat_template.clone().ok_or_else(|| {
            Failure::BadInput("--chat: the model has no chat template (tokenizer_config.json `chat_template`, chat_template.jinja, or a chat recipe's `chat_template`)".into())
        })?;
        let t = pzt::data::chat::ChatTemplate::new(&source, &tok.config()).map_err(lib_err)?;
        let msgs = vec![
            serde_json::json!({"role": "user", "content": prompt.clone().unwrap_or_default()}),
        ];
        prompt = Some(t.render(&msgs, true).map_err(lib_err)?);
        m.eos.push(tok.eos_id());
        m.eos.extend(t.end_of_turn(tok));
    }
    let ids = model_tokens(&m, &a.tokens, &prompt)?;
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(Failure::BadInput(format!(
            "--temperature must be a finite number >= 0 (0 = greedy), got {}",
            a.temperature
        )));
    }
    let most = pzt::data::MAX_SEQ;
    if a.max_new_tokens > most {
        return Err(Failure::BadInput(format!(
            "--max-new-tokens {} is more than pzt generates ({most})",
            a.max_new_tokens
        )));
    }
    if a.top_k == Some(0) {
        return Err(Failure::BadInput("--top-k must be at least 1".into()));
    }
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
    let text_mode = m.tokenizer.is_some() && prompt.is_some();
    if text_mode {
        print!("{}", prompt.clone().unwrap_or_default());
        // Without a decoder the new tokens come out separated by spaces: separate the first
        // from the prompt too.
        if m.tokenizer.as_ref().is_some_and(|t| !t.has_decoder()) {
            print!(" ");
        }
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
