//! Language-model sources, one item at a time: token sequences with a loss mask (1 where the
//! token is a target). The driver ([`super::stream`]) reads the files in bounded chunks and
//! tokenizes each chunk in parallel with these.

use crate::base::seed::mix;
use crate::base::{Error, Result};
use crate::data::chat::ChatTemplate;
use crate::data::spec::{Generator, Records, Synthetic};
use crate::data::tokenizer::Tokenizer;
use crate::data::Example;
use std::path::Path;

/// Synthetic record `i`, a prompt and its completion (a pure function of the seed and `i`).
pub(super) fn synthetic_record(cfg: &Synthetic, seed: u64, i: u64) -> Result<serde_json::Value> {
    let gen = cfg
        .generator
        .ok_or_else(|| Error::Config("[data]: no generator".into()))?;
    let base = mix(seed, 0xDA7A);
    let r = |k: u64| mix(base, i * 16 + k);
    let (prompt, completion) = match gen {
        Generator::Addition => {
            let m = 10u64.pow(cfg.max_digits);
            let (a, b) = (r(0) % m, r(1) % m);
            (format!("{a}+{b}="), format!("{}", a + b))
        }
        Generator::Copy | Generator::Reverse => {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let s: String = (0..cfg.length)
                .map(|k| alphabet[(r(k as u64) % alphabet.len() as u64) as usize] as char)
                .collect();
            let c = if gen == Generator::Copy {
                s.clone()
            } else {
                s.chars().rev().collect()
            };
            (format!("{s}="), c)
        }
    };
    Ok(serde_json::json!({ "prompt": prompt, "completion": completion }))
}

/// A prompt and its completion: the prompt after the special tokens the tokenizer starts a
/// text with (Llama's BOS, as `tokenizer(prompt)` in transformers), the completion tokenized on
/// its own and followed by the end token.
fn prompt_completion(tok: &Tokenizer, prompt: &str, completion: &str) -> Result<Example> {
    let mut p = tok.special_ends().0.to_vec();
    p.extend(tok.encode(prompt)?);
    let mut c = tok.encode(completion)?;
    c.push(tok.eos_id());
    let mut mask = vec![0u8; p.len()];
    mask.extend(std::iter::repeat_n(1u8, c.len()));
    let prompt_len = p.len();
    let mut ids = p;
    ids.extend(c);
    Ok(Example::Tokens {
        ids,
        mask,
        prompt_len,
        docs: vec![],
    })
}

/// Cuts a token stream into windows of `seq + 1` tokens with stride `seq`, as tokens arrive.
pub(super) struct Windows {
    seq: usize,
    buf: Vec<i64>,
    pub total: usize,
}

impl Windows {
    pub fn new(seq: usize) -> Windows {
        Windows {
            seq,
            buf: vec![],
            total: 0,
        }
    }

    /// Appends tokens and gives the windows that are complete.
    pub fn push(&mut self, tokens: &[i64]) -> Vec<Example> {
        self.total += tokens.len();
        self.buf.extend_from_slice(tokens);
        let mut out = vec![];
        let mut start = 0;
        while self.seq > 0 && self.buf.len() - start > self.seq {
            let w = &self.buf[start..start + self.seq + 1];
            out.push(Example::Tokens {
                ids: w.to_vec(),
                mask: vec![1; w.len()],
                prompt_len: 0,
                docs: vec![],
            });
            start += self.seq;
        }
        self.buf.drain(..start);
        out
    }
}

/// A record template (`prompt_template`, `completion_template`), compiled once per run and
/// kept by its text.
fn row_template(source: &str, tok: &Tokenizer) -> Result<std::sync::Arc<ChatTemplate>> {
    type Cache = std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<ChatTemplate>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = match cache.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let cfg = tok.config();
    let key = format!("{:?}\0{:?}\0{source}", cfg.bos_token, cfg.eos_token);
    if let Some(t) = c.get(&key) {
        return Ok(t.clone());
    }
    let t = std::sync::Arc::new(ChatTemplate::new(source, &cfg)?);
    if c.len() > 64 {
        c.clear();
    }
    c.insert(key, t.clone());
    Ok(t)
}

/// One record (a jsonl line's object, a parquet row, a generated record): `prompt` +
/// `completion` (or their templates over the row), or `text`.
pub(super) fn record_example(
    cfg: &Records,
    tok: &Tokenizer,
    file: &Path,
    line_no: usize,
    v: &serde_json::Value,
) -> Result<Example> {
    let bad = |m: String| Error::bad_line(file.display(), line_no, m);
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    if let Some(pt) = &cfg.prompt_template {
        let render = |source: &str, what: &str| {
            row_template(source, tok)
                .and_then(|t| t.render_row(v))
                .map_err(|e| bad(format!("{what}: {e}")))
        };
        let prompt = render(pt, "prompt_template")?;
        let completion = match &cfg.completion_template {
            Some(ct) => render(ct, "completion_template")?,
            None => field(&cfg.completion_field).ok_or_else(|| {
                bad(format!(
                    "expected a string field `{}`",
                    cfg.completion_field
                ))
            })?,
        };
        return prompt_completion(tok, &prompt, &completion);
    }
    if let (Some(p), Some(c)) = (field(&cfg.prompt_field), field(&cfg.completion_field)) {
        return prompt_completion(tok, &cfg.template.replace("{prompt}", &p), &c);
    }
    if let Some(t) = field(&cfg.text_field) {
        let mut ids = tok.special_ends().0.to_vec();
        ids.extend(tok.encode(&t)?);
        ids.push(tok.eos_id());
        let n = ids.len();
        return Ok(Example::Tokens {
            ids,
            mask: vec![1; n],
            prompt_len: 0,
            docs: vec![],
        });
    }
    Err(bad(format!(
        "expected a string field `{}`, or `{}` and `{}`",
        cfg.text_field, cfg.prompt_field, cfg.completion_field
    )))
}
