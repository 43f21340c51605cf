//! Data: readers (text, jsonl, parquet and csv files, generators) times formats (documents,
//! records, conversations, feature rows), tokenization, a deterministic train/eval split,
//! batching with a resumable cursor, and a tokenization cache. [`spec`] types `[data]`;
//! [`open`] opens a run's data in one place.
//!
//! Language-model examples are token sequences with a loss mask (1 where the token is a target
//! to predict); the model sees `ids[..n-1]` and predicts `ids[1..]`. `text` files are
//! concatenated (documents separated by the end token) and cut into windows of `seq_len + 1`
//! tokens; `jsonl` gives one example per line (`text`, or `prompt` + `completion` with the loss
//! masked on the prompt); `synthetic` generates examples from the seed; `csv` gives numeric
//! feature rows and a target for MLP regression or classification; `chat` renders conversations
//! with the tokenizer's chat template ([`chat`]) with the loss on the assistant turns.

pub mod chat;
mod decode;
pub mod open;
pub mod pack;
pub mod report;
pub mod sources;
pub mod spec;
pub mod store;
mod store_write;
pub mod tokenizer;

use crate::base::seed::mix;
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};
pub use spec::MAX_SEQ;
pub use store::Split;

/// One example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Example {
    /// A token sequence, its loss mask (1 = a target), and the length of the prompt (the part
    /// the model is given when generating; 0 for plain text).
    Tokens {
        ids: Vec<i64>,
        mask: Vec<u8>,
        prompt_len: usize,
        /// For a packed window: the document of each token (0, 0, 1, 1, 1, 2, ...); empty for
        /// one document.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        docs: Vec<u32>,
    },
    /// A numeric row: features and a target (a value, or a class index).
    Row { x: Vec<f32>, y: f32 },
    /// A preference pair: the prompt's tokens and those of the two completions that follow
    /// it (TRL's `prompt_ids`, `chosen_ids`, `rejected_ids`).
    Pair {
        prompt: Vec<i64>,
        chosen: Vec<i64>,
        rejected: Vec<i64>,
    },
    /// A completion judged on its own (KTO's unpaired rows): desirable when `label` is true.
    Unpaired {
        prompt: Vec<i64>,
        completion: Vec<i64>,
        label: bool,
    },
}

/// What the examples of a dataset are (one kind per dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleKind {
    /// Token sequences with a loss mask.
    #[default]
    Tokens,
    /// Numeric rows.
    Rows,
    /// Preference pairs.
    Pairs,
    /// Unpaired completions with a label.
    Unpaired,
}

impl ExampleKind {
    /// The kind's name in messages.
    pub fn describe(self) -> &'static str {
        match self {
            ExampleKind::Tokens => "token sequences",
            ExampleKind::Rows => "feature rows",
            ExampleKind::Pairs => "preference pairs (chosen and rejected)",
            ExampleKind::Unpaired => "unpaired rows (a completion and a label)",
        }
    }
}

impl Example {
    /// What kind of example it is.
    pub fn kind(&self) -> ExampleKind {
        match self {
            Example::Tokens { .. } => ExampleKind::Tokens,
            Example::Row { .. } => ExampleKind::Rows,
            Example::Pair { .. } => ExampleKind::Pairs,
            Example::Unpaired { .. } => ExampleKind::Unpaired,
        }
    }
}

/// A split dataset (read from the memory-mapped store when it was prepared before).
pub struct Dataset {
    pub train: Split,
    pub eval: Split,
    /// Number of classes (csv classification) or 0.
    pub num_classes: i64,
    /// Number of features (csv) or 0.
    pub num_features: i64,
    /// What preparing the examples dropped or cut.
    pub stats: PrepStats,
    /// The largest token id of the examples (None when they are not tokens).
    pub max_id: Option<i64>,
    /// What the examples are.
    pub kind: ExampleKind,
}

impl Dataset {
    /// A fingerprint of the data: the split sizes and up to 16 examples of each split, evenly
    /// spaced (their ids, masks, prompt lengths, rows). Two processes that prepared different
    /// data (another file, template or `seq_len`) almost surely differ here, whatever their paths.
    pub fn fingerprint(&self) -> crate::base::Result<u64> {
        use crate::base::seed::{fnv1a, mix};
        let mut h = fnv1a(b"pzt data fingerprint v1");
        for split in [&self.train, &self.eval] {
            let n = split.len();
            h = mix(h, n as u64);
            let picks = n.min(16);
            for k in 0..picks {
                let e = split.get(k * n / picks)?;
                let bytes = serde_json::to_vec(&e).unwrap_or_default();
                h = mix(h, fnv1a(&bytes));
            }
        }
        Ok(h)
    }
}

/// What preparing a dataset dropped or cut (counted over all examples, before the split).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepStats {
    /// Examples longer than `seq_len + 1` tokens that were skipped.
    pub skipped: usize,
    /// Examples longer than `seq_len + 1` tokens that were cut to it.
    pub truncated: usize,
    /// For a mixture: how many examples each source contributed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixture: Vec<usize>,
}

/// A permutation of `0..n` from a seed (Fisher-Yates with splitmix keys).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (mix(seed, i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Which of `n` examples go to the eval split and which to train, in the order each split
/// visits them (deterministic from `seed`).
pub fn split_indices(n: usize, eval_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n_eval = ((n as f64) * eval_fraction).round() as usize;
    let n_eval = if eval_fraction > 0.0 {
        n_eval.max(1).min(n.saturating_sub(1))
    } else {
        0
    };
    let perm = permutation(n, mix(seed, 0x5EED_5B17));
    let (eval, train) = perm.split_at(n_eval.min(n));
    (train.to_vec(), eval.to_vec())
}

/// Splits examples into train and eval deterministically from `seed`.
pub fn split(
    examples: Vec<Example>,
    eval_fraction: f64,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>)> {
    if examples.is_empty() {
        return Err(Error::Config("the dataset is empty".into()));
    }
    let (train_i, eval_i) = split_indices(examples.len(), eval_fraction, seed);
    let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
    let mut take = |idx: &[usize]| -> Vec<Example> {
        idx.iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .collect()
    };
    let eval = take(&eval_i);
    let train = take(&train_i);
    if train.is_empty() {
        return Err(Error::Config(
            "the training split is empty (too few examples)".into(),
        ));
    }
    Ok((train, eval))
}

/// The deterministic order in which training examples are visited: epoch `e` is a fresh
/// permutation from (seed, e); the cursor counts examples consumed since the start.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub seed: u64,
    pub n: usize,
    pub position: u64,
    epoch_perm: Option<(u64, Vec<usize>)>,
}

impl Cursor {
    /// A cursor at `position`.
    pub fn new(seed: u64, n: usize, position: u64) -> Self {
        Cursor {
            seed,
            n,
            position,
            epoch_perm: None,
        }
    }

    /// The indices of the next `count` examples, advancing the cursor.
    pub fn next_batch(&mut self, count: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let epoch = self.position / self.n as u64;
            let within = (self.position % self.n as u64) as usize;
            let perm = match &self.epoch_perm {
                Some((e, p)) if *e == epoch => p,
                _ => {
                    self.epoch_perm = Some((
                        epoch,
                        permutation(self.n, mix(self.seed, epoch.wrapping_add(0xE90C_0000))),
                    ));
                    match &self.epoch_perm {
                        Some((_, p)) => p,
                        None => break,
                    }
                }
            };
            out.push(perm[within]);
            self.position = self.position.saturating_add(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_and_cursors_are_pure_functions_of_the_seed() {
        let p = permutation(10, 3);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(p, permutation(10, 3));
        let mut a = Cursor::new(1, 5, 0);
        let first: Vec<usize> = a.next_batch(7);
        let mut b = Cursor::new(1, 5, 3);
        assert_eq!(b.next_batch(4), first[3..7].to_vec());
        assert_eq!(a.position, 7);
    }

    #[test]
    fn splits_hold_out_at_least_one_example() -> Result<()> {
        let ex = |i: i64| Example::Tokens {
            ids: vec![i],
            mask: vec![1],
            prompt_len: 0,
            docs: vec![],
        };
        let (train, eval) = split((0..10).map(ex).collect(), 0.01, 0)?;
        assert_eq!((train.len(), eval.len()), (9, 1));
        let (train, eval) = split((0..10).map(ex).collect(), 0.0, 0)?;
        assert_eq!((train.len(), eval.len()), (10, 0));
        assert!(split(vec![], 0.5, 0).is_err());
        Ok(())
    }
}
