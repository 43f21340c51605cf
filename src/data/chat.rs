//! Chat templates: conversations rendered with a tokenizer's Jinja `chat_template` (through
//! `minijinja`, set up as transformers' `apply_chat_template` sets up Jinja: `trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, Python string methods, `bos_token` / `eos_token` and
//! `add_generation_prompt` in the context), and turned into token examples whose loss covers
//! the assistant turns.
//!
//! An assistant turn is found by rendering prefixes of the conversation: for the assistant
//! message `k`, its content and the end-of-turn text the template writes after it are the
//! characters between `render(messages[..k], add_generation_prompt = true)` and
//! `render(messages[..=k])`. The role header (the generation prompt) is not part of it.

use super::tokenizer::{Tokenizer, TokenizerConfig};
use crate::base::{Error, Result};
use minijinja::{Environment, ErrorKind, Value};
use serde_json::Value as Json;

/// A compiled chat template with the tokenizer's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

/// Python's `json.dumps(v, ensure_ascii=False)`: `, ` and `: ` separators, keys in order.
fn py_json(v: &Json, out: &mut String) {
    match v {
        Json::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_json(x, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The most work one rendering may do (minijinja's instructions): a template whose loops run
/// away (nested loops over the messages, a huge range) stops with an error instead of hanging.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// The most text one rendering may write.
pub const TEMPLATE_OUTPUT: usize = 16 << 20;

/// How deep templates may nest calls, macros and includes.
const TEMPLATE_RECURSION: usize = 100;

/// Collects a rendering and fails once it passes [`TEMPLATE_OUTPUT`] bytes.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + b.len() > TEMPLATE_OUTPUT {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source` with the special tokens of `cfg`.
    pub fn new(source: &str, cfg: &TokenizerConfig) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_filter(
            "tojson",
            |v: Value| -> std::result::Result<Value, minijinja::Error> {
                let j: Json = serde_json::to_value(&v).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
                })?;
                let mut s = String::new();
                py_json(&j, &mut s);
                Ok(Value::from_safe_string(s))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Config(format!("the chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: cfg.bos_token.clone().unwrap_or_default(),
            eos: cfg.eos_token.clone().unwrap_or_default(),
        })
    }

    /// Renders `messages` (a JSON array of `{role, content}`).
    pub fn render(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Config(format!("chat template: {e}")))?;
        let mut out = Bounded(vec![]);
        t.render_captured_to(
            minijinja::context! {
                messages => Value::from_serialize(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.clone(),
                eos_token => self.eos.clone(),
                tools => Value::from(()),
            },
            &mut out,
        )
        .map_err(|e| {
            match e.kind() {
                ErrorKind::OutOfFuel => {
                    return Error::Config(format!("the chat template runs away on this conversation: it did not finish within {TEMPLATE_FUEL} steps (loops nested over the messages?)"))
                }
                ErrorKind::WriteFailure => {
                    return Error::Config(format!("the chat template writes more than {} MiB for this conversation", TEMPLATE_OUTPUT >> 20))
                }
                _ => {}
            }
            let mut msg = format!("the chat template failed: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Error::Config(msg)
        })?;
        String::from_utf8(out.0)
            .map_err(|_| Error::Config("the chat template wrote text that is not UTF-8".into()))
    }
}

impl ChatTemplate {
    /// The token the template ends an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...):
    /// the first token of what it writes after an assistant message's content.
    pub fn end_of_turn(&self, tok: &Tokenizer) -> Option<i64> {
        let marker = "pzt-end-of-turn-probe";
        let msgs: Vec<Json> = vec![
            serde_json::json!({"role": "user", "content": "hi"}),
            serde_json::json!({"role": "assistant", "content": marker}),
        ];
        let text = self.render(&msgs, false).ok()?;
        let after = &text[text.find(marker)? + marker.len()..];
        tok.encode(after).ok()?.first().copied()
    }
}

/// A conversation as tokens: ids, the loss mask (1 on assistant content and end-of-turn
/// tokens, or on every token with `all`), and the prompt length (up to the last assistant
/// turn's content, for generation-based evaluation).
pub struct Rendered {
    pub ids: Vec<i64>,
    pub mask: Vec<u8>,
    pub prompt_len: usize,
}

/// Renders and tokenizes one conversation (as `apply_chat_template(messages, tokenize=True)`
/// does: the template writes any BOS itself, so no special tokens are added).
pub fn conversation(
    t: &ChatTemplate,
    tok: &Tokenizer,
    messages: &[Json],
    all: bool,
) -> Result<Rendered> {
    let full = t.render(messages, false)?;
    let mut spans: Vec<(usize, usize)> = vec![];
    for (k, m) in messages.iter().enumerate() {
        if m.get("role").and_then(|r| r.as_str()) != Some("assistant") {
            continue;
        }
        let head = t.render(&messages[..k], true)?;
        let upto = t.render(&messages[..=k], false)?;
        if !full.starts_with(&upto) || !upto.starts_with(&head) {
            return Err(Error::Config(
                "the chat template does not render a conversation as the concatenation of its turns, so the assistant turns cannot be found; use train_on = \"all\"".into(),
            ));
        }
        spans.push((head.len(), upto.len()));
    }
    let (ids, offsets) = tok.encode_with_offsets(&full)?;
    let inside = |o: &(usize, usize)| spans.iter().any(|&(a, b)| o.0 >= a && o.0 < b);
    let mask: Vec<u8> = offsets.iter().map(|o| u8::from(all || inside(o))).collect();
    let prompt_len = match spans.last() {
        Some(&(a, _)) => offsets.iter().take_while(|o| o.0 < a).count(),
        None => 0,
    };
    Ok(Rendered {
        ids,
        mask,
        prompt_len,
    })
}

/// Checks one line's messages: a non-empty array of objects with a string `role` and a
/// `content`.
pub fn check_messages(v: &Json) -> std::result::Result<&[Json], String> {
    let a = v
        .as_array()
        .ok_or_else(|| "the messages are not an array".to_string())?;
    if a.is_empty() {
        return Err("the conversation has no messages".into());
    }
    for (i, m) in a.iter().enumerate() {
        if m.get("role").and_then(|r| r.as_str()).is_none() {
            return Err(format!("message {i} has no string `role`"));
        }
        if m.get("content").is_none() {
            return Err(format!("message {i} has no `content`"));
        }
    }
    Ok(a)
}
