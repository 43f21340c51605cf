//! Language-model sources: token sequences with a loss mask (1 where the token is a target).

use super::files::read;
use crate::base::seed::mix;
use crate::base::{Error, Result};
use crate::data::spec::{Generator, JsonlSource, SyntheticSource, TextSource};
use crate::data::tokenizer::Tokenizer;
use crate::data::Example;
use std::path::PathBuf;

pub(super) fn synthetic(cfg: &SyntheticSource, seed: u64, tok: &Tokenizer) -> Result<Vec<Example>> {
    let gen = cfg
        .generator
        .ok_or_else(|| Error::Config("[data]: no generator".into()))?;
    let mut out = Vec::with_capacity(cfg.num_examples);
    let base = mix(seed, 0xDA7A);
    for i in 0..cfg.num_examples as u64 {
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
        out.push(prompt_completion(tok, &prompt, &completion)?);
    }
    Ok(out)
}

fn prompt_completion(tok: &Tokenizer, prompt: &str, completion: &str) -> Result<Example> {
    let p = tok.encode(prompt)?;
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

pub(super) fn text_windows(
    cfg: &TextSource,
    files: &[PathBuf],
    tok: &Tokenizer,
) -> Result<Vec<Example>> {
    let seq = cfg.seq_len.unwrap_or(0);
    let mut stream: Vec<i64> = vec![];
    for f in files {
        let t = read(f)?;
        if t.trim().is_empty() {
            continue;
        }
        stream.extend(tok.encode(&t)?);
        stream.push(tok.eos_id());
    }
    if stream.is_empty() {
        return Err(Error::Config("[data]: the text files are empty".into()));
    }
    if stream.len() < seq + 1 {
        return Err(Error::ConfigField {
            field: "seq_len".into(),
            message: format!("[data]: seq_len {seq} is longer than the whole dataset ({} tokens); lower seq_len or add data", stream.len()),
        });
    }
    Ok(stream
        .windows(seq + 1)
        .step_by(seq)
        .map(|w| Example::Tokens {
            ids: w.to_vec(),
            mask: vec![1; w.len()],
            prompt_len: 0,
            docs: vec![],
        })
        .collect())
}

/// The examples of jsonl files, and how many were skipped for being longer than `seq_len + 1`.
pub(super) fn jsonl(
    cfg: &JsonlSource,
    files: &[PathBuf],
    tok: &Tokenizer,
) -> Result<(Vec<Example>, usize)> {
    let seq = cfg.seq_len.unwrap_or(0);
    let mut out = vec![];
    let mut too_long = 0usize;
    for f in files {
        for (i, line) in read(f)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| Error::bad_line(f.display(), i + 1, m);
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
            let ex = if let (Some(p), Some(c)) =
                (field(&cfg.prompt_field), field(&cfg.completion_field))
            {
                prompt_completion(tok, &cfg.template.replace("{prompt}", &p), &c)?
            } else if let Some(t) = field(&cfg.text_field) {
                let mut ids = tok.encode(&t)?;
                ids.push(tok.eos_id());
                let n = ids.len();
                Example::Tokens {
                    ids,
                    mask: vec![1; n],
                    prompt_len: 0,
                    docs: vec![],
                }
            } else {
                return Err(bad(format!(
                    "expected a string field `{}`, or `{}` and `{}`",
                    cfg.text_field, cfg.prompt_field, cfg.completion_field
                )));
            };
            if let Example::Tokens { ids, .. } = &ex {
                if ids.len() > seq + 1 {
                    too_long += 1;
                    continue;
                }
            }
            out.push(ex);
        }
    }
    if out.is_empty() && too_long > 0 {
        return Err(Error::ConfigField {
            field: "seq_len".into(),
            message: format!("[data]: every example ({too_long}) is longer than seq_len {seq} + 1 tokens; raise seq_len"),
        });
    }
    Ok((out, too_long))
}
