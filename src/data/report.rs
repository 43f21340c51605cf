//! What `pzt data` shows of a prepared dataset: statistics (examples, tokens, loss tokens,
//! skipped and truncated counts, a length histogram, how full unpacked windows are), examples
//! with the loss tokens marked, and the train split in source order.

use super::tokenizer::Tokenizer;
use super::{permutation, Dataset, Example};
use crate::base::seed::mix;
use crate::base::Result;
use serde::Serialize;
use serde_json::json;

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

/// What `pzt data` counts of a prepared dataset (`--json` writes it, keys sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataStats {
    /// Whether the training windows are packed.
    pub packed: bool,
    /// Documents over all examples (a packed window holds several).
    pub documents: usize,
    /// How full the packed training windows are (0 to 1).
    pub packed_fill: Option<f64>,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub tokens: usize,
    /// Tokens that carry the loss.
    pub loss_tokens: usize,
    pub skipped: usize,
    /// For a mixture: the examples each source contributed.
    pub mixture: Vec<usize>,
    pub truncated: usize,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub mean_length: Option<f64>,
    /// Tokens a window holds (`seq_len + 1`; 0 for feature rows).
    pub window: usize,
    /// How full unpacked windows would be (0 to 1).
    pub unpacked_fill: Option<f64>,
    /// Eight equal bins of example lengths.
    pub length_histogram: Vec<LengthBin>,
}

/// Examples with `from` to `to` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LengthBin {
    pub from: usize,
    pub to: usize,
    pub examples: usize,
}

/// Statistics of a prepared dataset whose windows hold `window` tokens (`seq_len + 1`),
/// read in one pass over the examples.
pub fn stats(ds: &Dataset, window: usize) -> Result<DataStats> {
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
            hist.push(LengthBin {
                from: a,
                to: z,
                examples: count,
            });
        }
    }
    let fill =
        (!lens.is_empty() && window > 0).then(|| tokens as f64 / (lens.len() * window) as f64);
    let packed_fill = (packed && window > 0 && !ds.train.is_empty())
        .then(|| train_tokens as f64 / (ds.train.len() * window) as f64);
    Ok(DataStats {
        packed,
        documents,
        packed_fill,
        train_examples: ds.train.len(),
        eval_examples: ds.eval.len(),
        tokens,
        loss_tokens: loss,
        skipped: ds.stats.skipped,
        mixture: ds.stats.mixture.clone(),
        truncated: ds.stats.truncated,
        min_length: lens.iter().min().copied(),
        max_length: lens.iter().max().copied(),
        mean_length: (!lens.is_empty()).then(|| tokens as f64 / lens.len() as f64),
        window,
        unpacked_fill: fill,
        length_histogram: hist,
    })
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
