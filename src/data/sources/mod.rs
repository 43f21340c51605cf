//! Loading a dataset: the sources (text, jsonl, csv, synthetic, chat, mixtures), the train/eval
//! split, packing, and the content-keyed store of prepared data ([`super::store`]).

pub mod chat;
mod csv;
mod files;
mod lm;

pub use files::expand_files;

use super::spec::{DataSpec, Source};
use super::tokenizer::Tokenizer;
use super::{split, Dataset, PrepStats};
use crate::base::seed::{fnv1a as fnv64, mix};
use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

/// The cache key of a dataset: source settings, file names and content hashes, tokenizer
/// (its files and config, chat template included), and a chat source's template file.
pub fn cache_key(
    cfg: &DataSpec,
    base: &Path,
    files: &[PathBuf],
    tok: Option<&Tokenizer>,
    seed: u64,
) -> Result<String> {
    let mut h = fnv64(serde_json::to_string(cfg).unwrap_or_default().as_bytes());
    h = mix(h, seed);
    let tok_id = match tok {
        Some(t) => t.identity()?,
        None => "none".into(),
    };
    h = mix(h, fnv64(tok_id.as_bytes()));
    if let Source::Chat(c) = &cfg.source {
        if let Some(f) = &c.chat_template {
            let text = crate::base::files::read_small_file(&base.join(f))?;
            h = mix(h, fnv64(text.as_bytes()));
        }
    }
    for f in files {
        let data = std::fs::read(f).map_err(|source| Error::Io {
            path: f.display().to_string(),
            source,
        })?;
        h = mix(h, fnv64(f.to_string_lossy().as_bytes()));
        h = mix(h, fnv64(&data));
    }
    Ok(format!("{h:016x}"))
}

/// Loads (from the cache when possible) and splits the dataset. `base` is the recipe's
/// directory; `cache_dir` where caches live; `tok` the tokenizer of language-model sources.
/// Returns the dataset and whether it came from the cache.
pub fn load(
    cfg: &DataSpec,
    base: &Path,
    cache_dir: &Path,
    seed: u64,
    tok: Option<&Tokenizer>,
) -> Result<(Dataset, bool)> {
    cfg.validate()?;
    let files = expand_files(&cfg.files(), base)?;
    let key = cache_key(cfg, base, &files, tok, seed)?;
    let store_dir = super::store::dir_of(cache_dir, &key);
    if let Some(s) = super::store::open(&store_dir) {
        return Ok((
            Dataset {
                train: s.train,
                eval: s.eval,
                num_classes: s.num_classes,
                num_features: s.num_features,
                stats: s.stats,
            },
            true,
        ));
    }
    let mut stats = PrepStats::default();
    let (examples, num_classes) = examples_of(&cfg.source, base, seed, tok, &mut stats)?;
    if examples.is_empty() {
        return Err(Error::Config("[data]: the dataset is empty".into()));
    }
    let num_features = match &cfg.source {
        Source::Csv(s) => s.features.len() as i64,
        _ => 0,
    };
    let (train, eval) = split(examples, cfg.eval_fraction, seed)?;
    // Packing joins training examples only: evaluation (and its greedy completions) reads
    // whole examples.
    let train = if cfg.pack {
        super::pack::pack(train, cfg.seq_len().unwrap_or(0) + 1)
    } else {
        train
    };
    // Best effort: a store that cannot be written only costs time next run (the data is
    // then used from memory).
    if super::store::write(&store_dir, &train, &eval, num_classes, num_features, &stats).is_ok() {
        if let Some(s) = super::store::open(&store_dir) {
            let ds = Dataset {
                train: s.train,
                eval: s.eval,
                num_classes,
                num_features,
                stats,
            };
            return Ok((ds, false));
        }
    }
    let ds = Dataset {
        train: super::Split::Memory(train),
        eval: super::Split::Memory(eval),
        num_classes,
        num_features,
        stats,
    };
    Ok((ds, false))
}

/// The examples of one source (for csv also the number of classes), counting what was
/// skipped or cut in `stats`.
fn examples_of(
    source: &Source,
    base: &Path,
    seed: u64,
    tok: Option<&Tokenizer>,
    stats: &mut PrepStats,
) -> Result<(Vec<super::Example>, i64)> {
    let need_tok = || tok.ok_or_else(|| Error::Config("[data]: no tokenizer".into()));
    let files = expand_files(&source.files(), base)?;
    Ok(match source {
        Source::Synthetic(s) => {
            let ex = lm::synthetic(s, seed, need_tok()?)?;
            let window = s.seq_len.unwrap_or(0) + 1;
            let longest = ex
                .iter()
                .filter_map(|e| match e {
                    super::Example::Tokens { ids, .. } => Some(ids.len()),
                    super::Example::Row { .. } => None,
                })
                .max()
                .unwrap_or(0);
            if longest > window {
                return Err(Error::ConfigField {
                    field: "seq_len".into(),
                    message: format!(
                        "[data]: the generated examples are up to {longest} tokens, longer than seq_len + 1 = {window}; set seq_len = {}",
                        longest - 1
                    ),
                });
            }
            (ex, 0)
        }
        Source::Text(s) => (lm::text_windows(s, &files, need_tok()?)?, 0),
        Source::Jsonl(s) => {
            let (ex, skipped) = lm::jsonl(s, &files, need_tok()?)?;
            stats.skipped += skipped;
            (ex, 0)
        }
        Source::Chat(s) => {
            let (ex, st) = chat::chat(s, &files, base, need_tok()?)?;
            stats.skipped += st.skipped;
            stats.truncated += st.truncated;
            (ex, 0)
        }
        Source::Csv(s) => csv::csv(s, &files)?,
        Source::Mixture(parts) => (mixture(parts, base, seed, tok, stats)?, 0),
    })
}

/// A weighted mixture: source `k` contributes `round(w_k / sum(w) * total)` examples (at least
/// one), where `total` is the number of examples of all sources, drawn from a permutation of
/// its own examples seeded by (seed, k), cycling when it has fewer. Sources follow each other
/// in order; the split and the epoch order then interleave them.
fn mixture(
    parts: &[super::spec::Weighted],
    base: &Path,
    seed: u64,
    tok: Option<&Tokenizer>,
    stats: &mut PrepStats,
) -> Result<Vec<super::Example>> {
    let mut each = vec![];
    for (k, w) in parts.iter().enumerate() {
        let (ex, _) = examples_of(&w.source, base, mix(seed, 0x313C + k as u64), tok, stats)
            .map_err(|e| match e {
                Error::ConfigField { field, message } => Error::ConfigField {
                    field: format!("sources.{k}.{field}"),
                    message,
                },
                other => other,
            })?;
        if ex.is_empty() {
            return Err(Error::ConfigField {
                field: format!("sources.{k}"),
                message: format!("[data.sources] {k}: the source has no examples"),
            });
        }
        each.push(ex);
    }
    let total: usize = each.iter().map(Vec::len).sum();
    let sum_w: f64 = parts.iter().map(|w| w.weight).sum();
    let mut out = vec![];
    stats.mixture.clear();
    for (k, (ex, w)) in each.into_iter().zip(parts).enumerate() {
        let want = ((w.weight / sum_w) * total as f64).round().max(1.0) as usize;
        let perm = super::permutation(ex.len(), mix(seed, 0x3130_0000 + k as u64));
        for i in 0..want {
            out.push(ex[perm[i % ex.len()]].clone());
        }
        stats.mixture.push(want);
    }
    Ok(out)
}
