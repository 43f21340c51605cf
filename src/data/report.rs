//! What `pzt data` shows of a prepared dataset: statistics (examples, tokens, loss tokens,
//! skipped and truncated counts, a length histogram, how full unpacked windows are), examples
//! with the loss tokens marked, and the train split in source order.

use super::tokenizer::Tokenizer;
use super::{permutation, Dataset, Example, ExampleKind};
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
    /// What the examples are: `tokens`, `rows`, `pairs` or `unpaired`.
    pub kind: ExampleKind,
    /// Unpaired rows: how many are desirable (label true) and undesirable.
    pub desirable: Option<usize>,
    pub undesirable: Option<usize>,
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
    /// Tokens a window holds (`seq_len + 1`; 0 for feature rows). A preference example's length
    /// is that of its longer sequence (the prompt and its longer completion).
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
    let (mut packed, mut train_tokens, mut tokens) = (false, 0usize, 0usize);
    let mut desirable = 0usize;
    for (is_train, split) in [(true, &ds.train), (false, &ds.eval)] {
        for e in split.examples() {
            let e = e?;
            let Some(c) = counts(&e) else { continue };
            lens.push(c.length);
            tokens += c.tokens;
            loss += c.loss;
            documents += c.documents;
            desirable += matches!(e, Example::Unpaired { label: true, .. }) as usize;
            if is_train {
                train_tokens += c.tokens;
                packed |= matches!(&e, Example::Tokens { docs, .. } if !docs.is_empty());
            }
        }
    }
    let unpaired = ds.kind == ExampleKind::Unpaired;
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
    let long: usize = lens.iter().sum();
    let fill = (!lens.is_empty() && window > 0).then(|| long as f64 / (lens.len() * window) as f64);
    let packed_fill = (packed && window > 0 && !ds.train.is_empty())
        .then(|| train_tokens as f64 / (ds.train.len() * window) as f64);
    Ok(DataStats {
        kind: ds.kind,
        desirable: unpaired.then_some(desirable),
        undesirable: unpaired.then_some(lens.len() - desirable),
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
        mean_length: (!lens.is_empty()).then(|| long as f64 / lens.len() as f64),
        window,
        unpacked_fill: fill,
        length_histogram: hist,
    })
}

/// What one example counts for.
struct Counts {
    /// Its length (a preference example's longer sequence).
    length: usize,
    /// The tokens it stores.
    tokens: usize,
    /// The tokens that carry loss.
    loss: usize,
    documents: usize,
}

fn counts(e: &Example) -> Option<Counts> {
    Some(match e {
        Example::Tokens {
            ids, mask, docs, ..
        } => Counts {
            length: ids.len(),
            tokens: ids.len(),
            loss: mask.iter().filter(|&&m| m == 1).count(),
            documents: docs.iter().max().map_or(1, |&m| m as usize + 1),
        },
        Example::Pair {
            prompt,
            chosen,
            rejected,
        } => Counts {
            length: prompt.len() + chosen.len().max(rejected.len()),
            tokens: prompt.len() + chosen.len() + rejected.len(),
            loss: chosen.len() + rejected.len(),
            documents: 1,
        },
        Example::Unpaired {
            prompt, completion, ..
        } => Counts {
            length: prompt.len() + completion.len(),
            tokens: prompt.len() + completion.len(),
            loss: completion.len(),
            documents: 1,
        },
        Example::Row { .. } => return None,
    })
}

/// Tokens as text (decoded together, so that a character split over tokens stays whole),
/// newlines shown as `\n`, between `[[` and `]]` when they carry the loss.
fn text_of(tok: &Tokenizer, ids: &[i64], loss: bool) -> String {
    let out = tok.decode(ids).replace('\n', "\\n");
    match loss && !ids.is_empty() {
        true => format!("[[{out}]]"),
        false => out,
    }
}

/// One example as text with the tokens that carry loss between `[[` and `]]` (newlines
/// shown as `\n`), like axolotl's preprocessing debug view.
pub fn marked(tok: &Tokenizer, e: &Example) -> String {
    let (ids, mask) = match e {
        Example::Tokens { ids, mask, .. } => (ids, mask),
        Example::Pair {
            prompt,
            chosen,
            rejected,
        } => {
            return format!(
                "prompt    {}\nchosen    {}\nrejected  {}",
                text_of(tok, prompt, false),
                text_of(tok, chosen, true),
                text_of(tok, rejected, true)
            )
        }
        Example::Unpaired {
            prompt,
            completion,
            label,
        } => {
            return format!(
                "prompt    {}\n{:<10}{}",
                text_of(tok, prompt, false),
                if *label { "desirable" } else { "undesirable" },
                text_of(tok, completion, true)
            )
        }
        Example::Row { .. } => return String::new(),
    };
    // Runs of tokens with the same mask, each decoded as a whole.
    let mut out = String::new();
    let mut start = 0;
    for i in 1..=ids.len() {
        let m = |k: usize| mask.get(k).copied().unwrap_or(0) == 1;
        if i == ids.len() || m(i) != m(start) {
            out.push_str(&text_of(tok, &ids[start..i], m(start)));
            start = i;
        }
    }
    out
}

/// One example as the JSON line `--export` writes: `{"tokens": [...], "loss_mask": [...]}`;
/// a pair as `{"prompt_ids", "chosen_ids", "rejected_ids"}` and an unpaired row as
/// `{"prompt_ids", "completion_ids", "label"}` (TRL's columns).
pub fn export_line(e: &Example) -> Option<String> {
    Some(
        match e {
            Example::Tokens { ids, mask, .. } => json!({"tokens": ids, "loss_mask": mask}),
            Example::Pair {
                prompt,
                chosen,
                rejected,
            } => json!({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}),
            Example::Unpaired {
                prompt,
                completion,
                label,
            } => json!({"prompt_ids": prompt, "completion_ids": completion, "label": label}),
            Example::Row { .. } => return None,
        }
        .to_string(),
    )
}
