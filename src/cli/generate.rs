//! `pzt generate MODEL (--prompt TEXT [--chat [--system TEXT]] | --tokens IDS | --chat)
//! [sampling flags]`.

use super::common::{lib_err, load_model, model_tokens, Failure};
use pzt::data::chat::ChatTemplate;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Generate tokens after a prompt, streaming them as they are sampled (KV cache); with --chat,
/// answer as the model's chat template has it, or chat interactively.
#[derive(clap::Args)]
pub struct Args {
    /// An HF model directory, a recipe, a run checkpoint directory, or a run directory (its
    /// newest checkpoint; RUN@best, RUN@latest).
    model: PathBuf,
    /// The prompt text (needs a tokenizer); `--text` is the same.
    #[arg(long, visible_alias = "text", conflicts_with = "tokens")]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. "1 2 3".
    #[arg(long)]
    tokens: Option<String>,
    /// Chat with the model's chat template: the prompt is a user message and only the answer
    /// is printed; generation stops at the template's end-of-turn token. Without --prompt, an
    /// interactive chat: one message per line on standard input, the history kept, until an
    /// empty input, `/exit` or the end of the input.
    #[arg(long, conflicts_with = "tokens")]
    chat: bool,
    /// A system message that starts the conversation (--chat).
    #[arg(long, requires = "chat", value_name = "TEXT")]
    system: Option<String>,
    /// The most tokens to generate (per answer with --chat).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// The sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the K most likely tokens only.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities add up to P (nucleus).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// The seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole sequence every step instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    /// Parameter dtype: float32, bfloat16, float16 (default: the model's).
    #[arg(long)]
    dtype: Option<String>,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn sampling(a: &Args) -> Result<pzt::models::generate::Sampling, Failure> {
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
    Ok(pzt::models::generate::Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    })
}

/// What generating needs besides the prompt.
struct Generator<'a> {
    a: &'a Args,
    m: pzt::loader::Loaded,
    device: tch::Device,
    sampling: pzt::models::generate::Sampling,
}

impl Generator<'_> {
    /// Generates after `ids`, printing the new text as it comes (`text`; without it, or
    /// without a tokenizer, the token ids), the end tokens left out with `hide_ends`; returns
    /// the new ids.
    fn stream(&self, ids: &[i64], text: bool, hide_ends: bool) -> Result<Vec<i64>, Failure> {
        let mut out = std::io::stdout();
        let mut all = vec![];
        let mut shown = String::new();
        pzt::models::generate::generate(
            &self.m.tree,
            ids,
            self.a.max_new_tokens,
            &self.m.eos,
            &self.sampling,
            &self.m.axes,
            self.device,
            !self.a.no_cache,
            |t| {
                all.push(t);
                match (&self.m.tokenizer, text) {
                    (Some(tok), true) => {
                        let shown_ids: Vec<i64> = all
                            .iter()
                            .copied()
                            .filter(|i| !(hide_ends && self.m.eos.contains(i)))
                            .collect();
                        let text = tok.decode(&shown_ids);
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
        Ok(all)
    }

    /// The chat template and the tokens that end an answer.
    fn chat_template(&mut self) -> Result<ChatTemplate, Failure> {
        let tok = self.m.tokenizer.as_ref().ok_or_else(|| {
            Failure::BadInput("--chat needs a tokenizer (the model's, or the recipe's)".into())
        })?;
        let source = self.m.chat_template.clone().ok_or_else(|| {
            Failure::BadInput("--chat: the model has no chat template (tokenizer_config.json `chat_template`, chat_template.jinja, or a chat recipe's `chat_template`)".into())
        })?;
        let t = ChatTemplate::new(&source, &tok.config()).map_err(lib_err)?;
        let (eos, end) = (tok.eos_id(), t.end_of_turn(tok));
        self.m.eos.push(eos);
        self.m.eos.extend(end);
        Ok(t)
    }

    /// Answers the conversation `msgs` (the template's generation prompt appended); the answer
    /// is printed and returned as text.
    fn answer(&self, t: &ChatTemplate, msgs: &[serde_json::Value]) -> Result<String, Failure> {
        let prompt = t.render(msgs, true).map_err(lib_err)?;
        // A rendered conversation is tokenized without added special tokens (the template
        // writes them), as apply_chat_template does.
        let ids = match &self.m.tokenizer {
            Some(tok) => tok.encode(&prompt).map_err(lib_err)?,
            None => model_tokens(&self.m, &None, &Some(prompt))?,
        };
        let new = self.stream(&ids, true, true)?;
        let kept: Vec<i64> = new
            .into_iter()
            .filter(|i| !self.m.eos.contains(i))
            .collect();
        Ok(self
            .m
            .tokenizer
            .as_ref()
            .map(|tok| tok.decode(&kept))
            .unwrap_or_default())
    }

    /// The interactive chat: a message per line of standard input, the history kept.
    fn interactive(
        &self,
        t: &ChatTemplate,
        mut msgs: Vec<serde_json::Value>,
    ) -> Result<(), Failure> {
        let stdin = std::io::stdin();
        let tty = std::io::IsTerminal::is_terminal(&stdin);
        if tty {
            eprintln!(
                "chatting with {} (an empty line or /exit ends)",
                self.a.model.display()
            );
        }
        let mut lines = stdin.lock().lines();
        loop {
            if tty {
                eprint!("> ");
                let _ = std::io::stderr().flush();
            }
            let Some(line) = lines.next() else { break };
            let line = line.map_err(|e| Failure::BadInput(format!("standard input: {e}")))?;
            let line = line.trim();
            if line.is_empty() || line == "/exit" {
                break;
            }
            msgs.push(json!({"role": "user", "content": line}));
            let reply = self.answer(t, &msgs)?;
            msgs.push(json!({"role": "assistant", "content": reply}));
        }
        Ok(())
    }
}

pub fn run(a: Args) -> Result<(), Failure> {
    let s = sampling(&a)?;
    let (m, device) = load_model(&a.model, &a.dtype, &a.device)?;
    let mut g = Generator {
        a: &a,
        m,
        device,
        sampling: s,
    };
    if a.chat {
        let t = g.chat_template()?;
        let mut msgs = vec![];
        if let Some(sys) = &a.system {
            msgs.push(json!({"role": "system", "content": sys}));
        }
        return match &a.prompt {
            Some(p) => {
                msgs.push(json!({"role": "user", "content": p}));
                g.answer(&t, &msgs).map(|_| ())
            }
            None => g.interactive(&t, msgs),
        };
    }
    let ids = model_tokens(&g.m, &a.tokens, &a.prompt)?;
    let text = g.m.tokenizer.is_some() && a.prompt.is_some();
    if text {
        // Text: the prompt, then its continuation (without a decoder the new tokens come out
        // separated by spaces: separate the first from the prompt too).
        print!("{}", a.prompt.clone().unwrap_or_default());
        if g.m.tokenizer.as_ref().is_some_and(|t| !t.has_decoder()) {
            print!(" ");
        }
    }
    g.stream(&ids, text, false).map(|_| ())
}
