//! What `pzt data` shows of a prepared dataset: statistics (examples, tokens, loss tokens,
//! skipped and truncated counts, a length histogram, how full unpacked windows are), examples
//! with the loss tokens marked, and the train split in source order.

use super::tokenizer::Tokenizer;
use super::{permutation, Dataset, Example};
use crate::base::seed::mix;
use crate::base::Result;
use serde_json::{json, Value};

/// The indices into `ds.train` in the order the examples came from their source (the split
/// visits a permutation of the source, as [`super::split`] does).
pub fn train_source_order(ds: &Dataset, seed: u64) -> Vec<usize> {
    let n = ds.train.len() + ds.eval.len();
    let perm = permutation(n, mix(seed, 0x5EED_5B17));
    let n_eval = ds.eval.len();
    let mut order: Vec<(usize, usize)> = perm[n_eval..]
        .iter()
        .enumerate()
        .map(|(j, &src)| (src, j))
        .collect();
    order.sort();
    order.into_iter().map(|(_, j)| j).collect()
}

/// Statistics of a prepared dataset whose windows hold `window` tokens (`seq_len + 1`),
/// read in one pass over the examples.
pub fn stats(ds: &Dataset, window: usize) -> Result<Value> {
    let (mut lens, mut loss, mut documents) = (vec![], 0usize, 0usize);
    let (mut packed, mut train_tokens) = (false, 0usize);
    for (is_train, split) in [(true, &ds.train), (false, &ds.eval)] {
        for e in split.examples() {
            if let Example::Tokens {
                ids, mask, docs, ..
            } = e?
            {
                lens.push(ids.len());
                loss += mask.iter().filter(|&&m| m == 1).count();
                documents += docs.iter().max().map_or(1, |&m| m as usize + 1);
                if is_train {
                    train_tokens += ids.len();
                    packed |= !docs.is_empty();
                }
            }
        }
    }
    let tokens: usize = lens.iter().sum();
    let mut hist = vec![];
    if let Some(&hi) = lens.iter().max() {
        // Eight equal bins from 1 to the window (or the longest example).
        let top = hi.max(window).max(1);
        let width = top.div_ceil(8).max(1);
        for b in 0..8 {
            let (a, z) = (b * width + 1, (b + 1) * width);
            let count = lens.iter().filter(|&&l| l >= a && l <= z).count();
            hist.push(json!({"from": a, "to": z, "examples": count}));
        }
    }
    let fill = if lens.is_empty() || window == 0 {
        Value::Null
    } else {
        json!(tokens as f64 / (lens.len() * window) as f64)
    };
    let packed_fill = if packed && window > 0 && !ds.train.is_empty() {
        json!(train_tokens as f64 / (ds.train.len() * window) as f64)
    } else {
        Value::Null
    };
    Ok(json!({
        "packed": packed,
        "documents": documents,
        "packed_fill": packed_fill,
        "train_examples": ds.train.len(),
        "eval_examples": ds.eval.len(),
        "tokens": tokens,
        "loss_tokens": loss,
        "skipped": ds.stats.skipped,
        "mixture": ds.stats.mixture,
        "truncated": ds.stats.truncated,
        "min_length": lens.iter().min(),
        "max_length": lens.iter().max(),
        "mean_length": if lens.is_empty() { Value::Null } else { json!(tokens as f64 / lens.len() as f64) },
        "window": window,
        "unpacked_fill": fill,
        "length_histogram": hist,
    }))
}

/// One example as text with the tokens that carry loss between `[[` and `]]` (newlines
/// shown as `\n`), like axolotl's preprocessing debug view.
pub fn marked(tok: &Tokenizer, e: &Example) -> String {
    let Example::Tokens { ids, mask, .. } = e else {
        return String::new();
    };
    let mut out = String::new();
    let mut on = false;
    for (i, &id) in ids.iter().enumerate() {
        let m = mask.get(i).copied().unwrap_or(0) == 1;
        if m != on {
            out.push_str(if m { "[[" } else { "]]" });
            on = m;
        }
        out.push_str(&tok.decode(&[id]).replace('\n', "\\n"));
    }
    if on {
        out.push_str("]]");
    }
    out
}

/// One example as the JSON line `--export` writes: `{"tokens": [...], "loss_mask": [...]}`.
pub fn export_line(e: &Example) -> Option<String> {
    match e {
        Example::Tokens { ids, mask, .. } => {
            Some(json!({"tokens": ids, "loss_mask": mask}).to_string())
        }
        Example::Row { .. } => None,
    }
}
