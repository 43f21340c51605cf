//! Preference rows, in TRL's shapes and tokenized as TRL tokenizes them:
//!
//! - pairs: `{"prompt", "chosen", "rejected"}`, plain strings or conversational (the prompt a
//!   list of messages, chosen and rejected lists of assistant messages); without `prompt`, the
//!   beginning that chosen and rejected share is the prompt (TRL's `extract_prompt`);
//! - unpaired rows: `{"prompt", "completion", "label"}` (KTO's), `label` true or false.
//!
//! The prompt, and the prompt followed by each completion, are tokenized on their own: plain
//! rows as `tokenizer(text)` (with the special tokens the tokenizer adds), each completion
//! ending with the end token (appended to its text unless it ends with it); conversational rows
//! through the chat template, the prompt alone with the generation prompt. A completion starts
//! where the token sequences of the prompt and of prompt + completion diverge (TRL's
//! `common_prefix_length`), so that prompt + completion is exactly the tokenized whole.

use super::chat::{row_extra, Line};
use crate::base::{Error, Result};
use crate::data::chat::{check_messages, ChatTemplate, Extra};
use crate::data::spec::{Overflow, Preference};
use crate::data::tokenizer::Tokenizer;
use crate::data::Example;
use serde_json::Value;
use std::path::Path;

/// A row's prompt and completions, as the row writes them (strings, or lists of messages).
struct Texts<'a> {
    prompt: std::borrow::Cow<'a, Value>,
    completions: Vec<std::borrow::Cow<'a, Value>>,
    /// An unpaired row's label.
    label: Option<bool>,
}

/// TRL's `extract_prompt`: the longest beginning chosen and rejected share (characters of
/// strings, whole messages of lists), less a space that ends it, and the rest of each.
fn split_shared(chosen: &Value, rejected: &Value) -> std::result::Result<[Value; 3], String> {
    fn cut<T: PartialEq>(c: &[T], r: &[T], space: impl Fn(&T) -> bool) -> Option<usize> {
        let n = c.len().min(r.len());
        match (0..n).find(|&i| c[i] != r[i]) {
            // A space before the difference goes with the completions.
            Some(i) if i > 0 && space(&c[i - 1]) => Some(i - 1),
            Some(i) => Some(i),
            // One is the beginning of the other: TRL stops at the last shared element.
            None => n.checked_sub(1),
        }
    }
    let empty = || "`chosen` and `rejected` share no prompt: one of them is empty".to_string();
    match (chosen, rejected) {
        (Value::String(c), Value::String(r)) => {
            let (cc, rc): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            let i = cut(&cc, &rc, |ch| *ch == ' ').ok_or_else(empty)?;
            let s = |v: &[char]| Value::String(v.iter().collect());
            Ok([s(&cc[..i]), s(&cc[i..]), s(&rc[i..])])
        }
        (Value::Array(c), Value::Array(r)) => {
            let i = cut(c, r, |_| false).ok_or_else(empty)?;
            let s = |v: &[Value]| Value::Array(v.to_vec());
            Ok([s(&c[..i]), s(&c[i..]), s(&r[i..])])
        }
        _ => Err("`chosen` and `rejected` should both be strings or both lists of messages".into()),
    }
}

/// The prompt and completions of row `v`, or what is wrong with it.
fn texts<'a>(cfg: &Preference, v: &'a Value) -> std::result::Result<Texts<'a>, String> {
    use std::borrow::Cow;
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    let (prompt, chosen, rejected) = (
        get(&cfg.prompt_field),
        get(&cfg.chosen_field),
        get(&cfg.rejected_field),
    );
    if let (Some(c), Some(r)) = (chosen, rejected) {
        let Some(p) = prompt else {
            let [p, c, r] = split_shared(c, r)?;
            return Ok(Texts {
                prompt: Cow::Owned(p),
                completions: vec![Cow::Owned(c), Cow::Owned(r)],
                label: None,
            });
        };
        return Ok(Texts {
            prompt: Cow::Borrowed(p),
            completions: vec![Cow::Borrowed(c), Cow::Borrowed(r)],
            label: None,
        });
    }
    let (completion, label) = (get(&cfg.completion_field), get(&cfg.label_field));
    match (prompt, completion, label) {
        (Some(p), Some(c), Some(l)) => {
            let label = l.as_bool().ok_or_else(|| {
                format!("`{}` should be true or false, got {l}", cfg.label_field)
            })?;
            Ok(Texts {
                prompt: Cow::Borrowed(p),
                completions: vec![Cow::Borrowed(c)],
                label: Some(label),
            })
        }
        _ => Err(format!(
            "a preference row needs `{}` and `{}` (a pair, `{}` optional), or `{}`, `{}` and `{}` (an unpaired row)",
            cfg.chosen_field,
            cfg.rejected_field,
            cfg.prompt_field,
            cfg.prompt_field,
            cfg.completion_field,
            cfg.label_field
        )),
    }
}

/// The length of the beginning `a` and `b` share.
fn common_prefix(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Plain text: the prompt, and the prompt followed by each completion (which ends with the end
/// token's text, as TRL appends it), tokenized as `tokenizer(text)`.
fn plain_ids(
    tok: &Tokenizer,
    prompt: &str,
    completions: &[&str],
) -> Result<(Vec<i64>, Vec<Vec<i64>>)> {
    let eos = tok
        .config()
        .eos_token
        .unwrap_or_else(|| tok.decode(&[tok.eos_id()]));
    let whole = completions
        .iter()
        .map(|c| {
            let mut text = format!("{prompt}{c}");
            if !c.ends_with(&eos) {
                text.push_str(&eos);
            }
            tok.encode_special(&text)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tok.encode_special(prompt)?, whole))
}

/// Conversations: the prompt rendered with the generation prompt, and the prompt followed by
/// each completion's messages, tokenized as apply_chat_template tokenizes them.
fn chat_ids(
    t: &ChatTemplate,
    tok: &Tokenizer,
    extra: &Extra,
    prompt: &[Value],
    completions: &[&[Value]],
) -> Result<(Vec<i64>, Vec<Vec<i64>>)> {
    let p = t.render_tracked(prompt, true, extra)?.0;
    let whole = completions
        .iter()
        .map(|c| {
            let msgs: Vec<Value> = prompt.iter().chain(c.iter()).cloned().collect();
            tok.encode(&t.render_tracked(&msgs, false, extra)?.0)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((tok.encode(&p)?, whole))
}

/// Cuts a prompt and its completions to `window` tokens per sequence: the prompt loses its
/// first tokens until the longest completion fits after it; a completion longer than the window
/// keeps its last tokens (its end). Returns whether anything was cut.
fn fit(prompt: &mut Vec<i64>, completions: &mut [Vec<i64>], window: usize) -> bool {
    let longest = completions.iter().map(Vec::len).max().unwrap_or(0);
    let over = (prompt.len() + longest).saturating_sub(window);
    if over == 0 {
        return false;
    }
    prompt.drain(..over.min(prompt.len()));
    for c in completions.iter_mut() {
        if c.len() > window {
            c.drain(..c.len() - window);
        }
    }
    true
}

/// The conversational template, or why a row cannot be rendered without one.
fn need_template(t: Option<&ChatTemplate>) -> std::result::Result<&ChatTemplate, String> {
    t.ok_or_else(|| "a conversational row needs a chat template: the tokenizer has none (tokenizer_config.json or chat_template.jinja); set `chat_template = \"file.jinja\"`".into())
}

/// The prompt's tokens and each completion's, as TRL tokenizes the row.
fn tokenized(
    cfg: &Preference,
    t: Option<&ChatTemplate>,
    tok: &Tokenizer,
    v: &Value,
    x: &Texts<'_>,
) -> std::result::Result<(Vec<i64>, Vec<Vec<i64>>), String> {
    let (prompt_ids, whole) = match x.prompt.as_ref() {
        Value::String(p) => {
            let cs: Option<Vec<&str>> = x.completions.iter().map(|c| c.as_str()).collect();
            let cs = cs.ok_or("the prompt is a string, so each completion should be one")?;
            plain_ids(tok, p, &cs).map_err(|e| e.to_string())?
        }
        Value::Array(_) => {
            let t = need_template(t)?;
            let prompt = check_messages(&x.prompt).map_err(|e| format!("the prompt: {e}"))?;
            let cs = x
                .completions
                .iter()
                .map(|c| check_messages(c).map_err(|e| format!("a completion: {e}")))
                .collect::<std::result::Result<Vec<&[Value]>, String>>()?;
            let extra = row_extra(&cfg.tools_field, &cfg.template_kwargs, v)?;
            chat_ids(t, tok, &extra, prompt, &cs).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "the prompt should be a string or a list of messages, got {other}"
            ))
        }
    };
    let n = whole
        .iter()
        .map(|w| common_prefix(&prompt_ids, w))
        .min()
        .unwrap_or(0);
    let completions = whole.iter().map(|w| w[n..].to_vec()).collect();
    Ok((prompt_ids[..n].to_vec(), completions))
}

/// One preference row (a jsonl line's object, a parquet row), fitted to `window` tokens
/// (`seq_len + 1`) per sequence as `overflow` says.
pub(super) fn preference_value(
    cfg: &Preference,
    t: Option<&ChatTemplate>,
    tok: &Tokenizer,
    window: usize,
    (file, line_no): (&Path, usize),
    v: &Value,
) -> Result<Line> {
    let bad = |m: String| Error::bad_line(file.display(), line_no, m);
    let x = texts(cfg, v).map_err(bad)?;
    let (mut prompt, mut completions) = tokenized(cfg, t, tok, v, &x).map_err(bad)?;
    let cut = fit(&mut prompt, &mut completions, window);
    if cut && cfg.overflow == Overflow::Skip {
        return Ok(Line::Skipped);
    }
    let mut cs = completions.into_iter();
    let (first, second) = (cs.next().unwrap_or_default(), cs.next());
    let e = match (x.label, second) {
        (Some(label), _) => Example::Unpaired {
            prompt,
            completion: first,
            label,
        },
        (None, rejected) => Example::Pair {
            prompt,
            chosen: first,
            rejected: rejected.unwrap_or_default(),
        },
    };
    Ok(if cut {
        Line::Truncated(e)
    } else {
        Line::Example(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shared_beginning_is_the_prompt_as_trl_extracts_it() {
        let [p, c, r] = split_shared(&json!("The sky is blue."), &json!("The sky is green."))
            .unwrap_or_else(|_| [json!(0), json!(0), json!(0)]);
        assert_eq!(
            (p, c, r),
            (json!("The sky is"), json!(" blue."), json!(" green."))
        );
        let u = json!({"role": "user", "content": "Hi"});
        let a = |s: &str| json!({"role": "assistant", "content": s});
        let [p, c, r] = split_shared(&json!([u, a("Hello")]), &json!([u, a("No")]))
            .unwrap_or_else(|_| [json!(0), json!(0), json!(0)]);
        assert_eq!(
            (p, c, r),
            (json!([u]), json!([a("Hello")]), json!([a("No")]))
        );
        assert!(split_shared(&json!(""), &json!("x")).is_err());
        assert!(split_shared(&json!("x"), &json!([u])).is_err());
    }

    #[test]
    fn fitting_cuts_the_prompt_first_and_keeps_the_completions_ends() {
        let (mut p, mut cs) = (vec![1, 2, 3, 4], vec![vec![5, 6], vec![7, 8, 9]]);
        assert!(!fit(&mut p.clone(), &mut cs.clone(), 7));
        assert!(fit(&mut p, &mut cs, 5));
        assert_eq!((p, cs), (vec![3, 4], vec![vec![5, 6], vec![7, 8, 9]]));
        let (mut p, mut cs) = (vec![1, 2], vec![vec![3, 4, 5, 6]]);
        assert!(fit(&mut p, &mut cs, 3));
        assert_eq!((p, cs), (vec![], vec![vec![4, 5, 6]]));
    }
}
