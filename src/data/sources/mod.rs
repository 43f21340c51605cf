//! Loading a dataset: the readers (text, jsonl, parquet and csv files, generators) and formats
//! (documents, records, conversations, feature rows), mixtures, the train/eval split, packing,
//! and the content-keyed store of prepared data ([`super::store`]).

pub mod chat;
mod csv;
mod files;
mod lm;
mod parquet;
mod preference;
mod stream;

pub use files::expand_files;

use super::spec::{DataSpec, Features, Streams, Weighted};
use super::store_write::{Holdout, StoreBuilder};
use super::tokenizer::Tokenizer;
use super::{split, Dataset, PrepStats, Split};
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
    // The version of how rows become examples: a store prepared by an older pzt is not reused.
    let mut h = fnv64(b"pzt examples v2");
    let spec = serde_json::to_string(cfg).unwrap_or_default();
    h = mix(h, fnv64(spec.as_bytes()));
    // A template that reads the clock (`strftime_now`) renders the day into the data.
    let clock = |t: &str| t.contains("strftime_now");
    let mut uses_clock =
        clock(&spec) || tok.is_some_and(|t| t.config().chat_template.as_deref().is_some_and(clock));
    h = mix(h, seed);
    let tok_id = match tok {
        Some(t) => t.identity()?,
        None => "none".into(),
    };
    h = mix(h, fnv64(tok_id.as_bytes()));
    if let Some(f) = cfg.chat_template() {
        let text = crate::base::files::read_small_file(&base.join(f))?;
        h = mix(h, fnv64(text.as_bytes()));
        uses_clock |= clock(&text);
    }
    // Its day is fixed by SOURCE_DATE_EPOCH when that is set; otherwise the day of the first
    // preparation stays with the store (a run resumed on another day reads the same data).
    if let (true, Some(v)) = (uses_clock, std::env::var_os(super::chat::SOURCE_DATE_EPOCH)) {
        h = mix(h, fnv64(v.to_string_lossy().as_bytes()));
    }
    for f in files {
        h = mix(h, fnv64(f.to_string_lossy().as_bytes()));
        h = mix(h, file_hash(f)?);
    }
    Ok(format!("{h:016x}"))
}

/// A hash of a file's content, read 1 MiB at a time.
fn file_hash(path: &Path) -> Result<u64> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h = fnv64(b"pzt file");
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(h);
        }
        h = mix(h, fnv64(&buf[..n]));
    }
}

/// Loads (from the store when it was prepared before) and splits the dataset. `base` is the
/// recipe's directory; `cache_dir` where stores live; `tok` the tokenizer of language-model
/// sources. Returns the dataset and whether it came from the store.
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
        return Ok((from_store(s), true));
    }
    if let Some(f) = cfg.features() {
        return load_rows(cfg, f, &files, &store_dir, seed);
    }
    let (Some(tok), Some(seq_len)) = (tok, cfg.seq_len()) else {
        return Err(Error::Config(
            "[data]: token data needs a tokenizer and `seq_len`".into(),
        ));
    };
    let id_bytes = if tok.vocab_size() <= 65_536 { 2 } else { 4 };
    let b = StoreBuilder::new(&store_dir, id_bytes).map_err(|e| {
        Error::Config(format!(
            "cannot keep the prepared data in {}: {e}; make it writable or choose another `[data] cache_dir`",
            cache_dir.display()
        ))
    })?;
    let mut stats = PrepStats::default();
    let mut all = b.all()?;
    let streamed = match &cfg.streams {
        Streams::Mixture(parts) => {
            let m = Mixing {
                base,
                seed,
                tok,
                seq_len,
            };
            stream_mixture(&b, parts, &m, &mut stats, &mut all)
        }
        Streams::One(s) => stream::stream(s, seq_len, base, seed, tok, &mut stats, &mut |e| {
            all.push(&e)
        }),
    };
    // On any failure `b` is dropped, and its temporary directory with it.
    streamed?;
    let holdout = match (&cfg.streams, cfg.eval_files.is_empty()) {
        (Streams::One(s), false) => {
            // The eval split's own files, read as the training ones, after them.
            let train = all.count();
            let eval = s.with_files(cfg.eval_files.clone());
            stream::stream(&eval, seq_len, base, seed, tok, &mut stats, &mut |e| {
                all.push(&e)
            })?;
            Holdout::From(train)
        }
        _ => Holdout::Fraction(cfg.eval_fraction),
    };
    let info = all.finish()?;
    let pack = cfg.pack.then_some(seq_len + 1);
    b.finish(info, holdout, seed, pack, 0, &stats)?;
    let s = super::store::open(&store_dir).ok_or_else(|| {
        Error::Config(format!(
            "the prepared data in {} cannot be read back",
            store_dir.display()
        ))
    })?;
    Ok((from_store(s), false))
}

/// Feature rows: read, split, and kept in a store (best effort).
fn load_rows(
    cfg: &DataSpec,
    f: &Features,
    files: &[PathBuf],
    store_dir: &Path,
    seed: u64,
) -> Result<(Dataset, bool)> {
    let stats = PrepStats::default();
    let (rows, num_classes) = csv::csv(f, files)?;
    if rows.is_empty() {
        return Err(Error::Config("[data]: the dataset is empty".into()));
    }
    let (train, eval) = split(rows, cfg.eval_fraction, seed)?;
    let num_features = f.features.len() as i64;
    // Best effort: a store that cannot be written only costs time next run.
    if let Ok(b) = StoreBuilder::new(store_dir, 2) {
        let _ = b.finish_rows(
            (train.clone(), eval.clone()),
            num_classes,
            num_features,
            &stats,
        );
    }
    let ds = Dataset {
        train: Split::Memory(train),
        eval: Split::Memory(eval),
        num_classes,
        num_features,
        stats,
        max_id: None,
        kind: super::ExampleKind::Rows,
    };
    Ok((ds, false))
}

fn from_store(s: super::store::Stored) -> Dataset {
    Dataset {
        train: s.train,
        eval: s.eval,
        num_classes: s.num_classes,
        num_features: s.num_features,
        stats: s.stats,
        max_id: s.max_id,
        kind: s.kind,
    }
}

/// A weighted mixture: source `k` contributes `round(w_k / sum(w) * total)` examples (at least
/// one), where `total` is the number of examples of all sources, drawn from a permutation of
/// its own examples seeded by (seed, k), cycling when it has fewer. Sources follow each other
/// in order; the split and the epoch order then interleave them. This gives, per source, the
/// indices of its examples to take, in order.
fn draws(parts: &[Weighted], sizes: &[usize], seed: u64) -> Vec<Vec<usize>> {
    let total: usize = sizes.iter().sum();
    let sum_w: f64 = parts.iter().map(|w| w.weight).sum();
    parts
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(k, (w, &n))| {
            let want = ((w.weight / sum_w) * total as f64).round().max(1.0) as usize;
            let perm = super::permutation(n, mix(seed, 0x3130_0000 + k as u64));
            (0..want).map(|i| perm[i % n.max(1)]).collect()
        })
        .collect()
}

/// What every stream of a mixture shares.
struct Mixing<'a> {
    base: &'a Path,
    seed: u64,
    tok: &'a Tokenizer,
    seq_len: usize,
}

/// Streams stream `k` of a mixture into `sink` (its errors name the stream).
fn stream_part(
    k: usize,
    w: &Weighted,
    m: &Mixing<'_>,
    stats: &mut PrepStats,
    sink: &mut stream::Sink<'_>,
) -> Result<usize> {
    let mut n = 0usize;
    let seed = mix(m.seed, 0x313C + k as u64);
    stream::stream(&w.stream, m.seq_len, m.base, seed, m.tok, stats, &mut |e| {
        n += 1;
        sink(e)
    })
    .map_err(|e| super::spec::in_stream(k, e))?;
    if n == 0 {
        return Err(Error::ConfigField {
            field: format!("sources.{k}"),
            message: format!("[data.sources] {k}: the source has no examples"),
        });
    }
    Ok(n)
}

/// A mixture streamed through the store: each stream into its own files, then the draws
/// copied into `all`, so no stream is held in memory.
fn stream_mixture(
    b: &StoreBuilder,
    parts: &[Weighted],
    m: &Mixing<'_>,
    stats: &mut PrepStats,
    all: &mut super::store_write::SplitWriter,
) -> Result<()> {
    let mut infos = vec![];
    for (k, w) in parts.iter().enumerate() {
        let mut part = b.part(&format!("src-{k}"))?;
        stream_part(k, w, m, stats, &mut |e| part.push(&e))?;
        infos.push(part.finish()?);
    }
    let sizes: Vec<usize> = infos.iter().map(|i| i.examples).collect();
    let picks = draws(parts, &sizes, m.seed);
    stats.mixture = picks.iter().map(Vec::len).collect();
    for (k, (info, idx)) in infos.iter().zip(&picks).enumerate() {
        let src = b.open_part(&format!("src-{k}"), info)?;
        for (n, &i) in idx.iter().enumerate() {
            if n % 65_536 == 65_535 {
                src.release();
            }
            all.push(&src.get(i)?)?;
        }
    }
    b.remove_parts(parts.len());
    Ok(())
}
