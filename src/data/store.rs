//! The prepared-dataset store: a directory `<cache_dir>/data-<key>/` with a small JSON
//! manifest and, per split, memory-mapped binary files that a run reads without loading them:
//!
//! | file | contents |
//! |---|---|
//! | `manifest.json` | format, id width, example and token counts, classes, features, stats |
//! | `all.ids` | token ids of every example in source order, little-endian u16 (vocabularies up to 65,536) or u32 |
//! | `all.offsets` | u64 per example + 1: where each example's tokens start |
//! | `all.mask` | one bit per token (LSB first): 1 = a loss target |
//! | `all.prompt` | u32 per example: its prompt length |
//! | `all.parts` | u32 per example: a preference pair's chosen length (the rejected completion follows it), an unpaired row's label (1 desirable, 0 not); 0 for token sequences |
//! | `train.index`, `eval.index` | u64 per example of the split: its index in `all` |
//! | `train.{ids,offsets,mask,prompt,docs}` | the packed training windows (only when packed); `docs`: u32 per token, its document |
//!
//! csv rows are small and stay in the manifest. The directory is written under a temporary
//! name, every file fsynced, and renamed into place, so a crash leaves no half store; a store
//! whose files do not agree with its manifest is not used (the data is prepared again).

use super::{Example, ExampleKind, PrepStats};
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// v3: the manifest holds a CRC-32C of every file and the largest token id.
pub(super) const FORMAT: &str = "pzt-tokens-v3";

/// What `manifest.json` holds about one split.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct SplitInfo {
    pub examples: usize,
    pub tokens: usize,
    pub packed: bool,
    /// What the examples are (token sequences, preference pairs, unpaired rows).
    #[serde(default)]
    pub kind: ExampleKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    pub format: String,
    pub id_bytes: usize,
    pub num_classes: i64,
    pub num_features: i64,
    pub stats: PrepStats,
    /// Every example in source order (files `all.*`).
    pub all: SplitInfo,
    /// The training split's packed windows (files `train.*`), when packed.
    pub packed: Option<SplitInfo>,
    /// How many examples `train.index` and `eval.index` list (indices into `all`).
    pub train_examples: usize,
    pub eval_examples: usize,
    /// csv rows (train, eval), kept here instead.
    #[serde(default)]
    pub rows: Option<(Vec<Example>, Vec<Example>)>,
    /// The store's files and their CRC-32C (hex): a store whose files do not match is not used.
    #[serde(default)]
    pub checksums: std::collections::BTreeMap<String, String>,
    /// The largest token id stored (None for csv rows).
    #[serde(default)]
    pub max_id: Option<i64>,
}

/// The CRC-32C of a regular file (None for anything else: a FIFO or device would block).
pub(super) fn checksum(path: &Path) -> Option<String> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return Some(format!("{crc:08x}"));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// The largest id in an ids file of `id_bytes`-wide little-endian ids (-1 when empty), read in
/// chunks.
pub(super) fn max_id(path: &Path, id_bytes: usize) -> Result<i64> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::bad_file(path.display(), e.to_string()))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut max = -1i64;
    loop {
        buf.clear();
        // A whole chunk (or the rest of the file), so that no id is cut in two.
        let n = (&mut f)
            .take(1 << 20)
            .read_to_end(&mut buf)
            .map_err(|e| Error::bad_file(path.display(), e.to_string()))?;
        if n == 0 {
            return Ok(max);
        }
        for c in buf.chunks_exact(id_bytes) {
            let id = match c {
                [a, b] => u16::from_le_bytes([*a, *b]) as i64,
                [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as i64,
                _ => 0,
            };
            max = max.max(id);
        }
    }
}

/// Whether every file of the store is a regular file matching its checksum, and no other file
/// is there.
fn files_match(dir: &Path, m: &Manifest) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    let names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    names.len() == m.checksums.len()
        && m.checksums
            .iter()
            .all(|(name, want)| checksum(&dir.join(name)).as_deref() == Some(want.as_str()))
}

/// A read-only file, memory-mapped (empty files are not mapped).
struct Bytes(Option<memmap2::Mmap>);

impl Bytes {
    fn open(path: &Path) -> Result<Bytes> {
        // Checked before opening: opening a FIFO would wait for a writer.
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
            return Err(Error::bad_file(path.display(), "not a regular file"));
        }
        let f = std::fs::File::open(path)
            .map_err(|e| Error::bad_file(path.display(), e.to_string()))?;
        let len = f
            .metadata()
            .map_err(|e| Error::bad_file(path.display(), e.to_string()))?
            .len();
        if len == 0 {
            return Ok(Bytes(None));
        }
        // SAFETY: the store's files are written once, then only read; a concurrent writer
        // would use another (temporary) directory.
        let m = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| Error::bad_file(path.display(), e.to_string()))?;
        Ok(Bytes(Some(m)))
    }
    fn get(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
    /// Lets the kernel drop the mapped pages (they are read again from the file when needed).
    fn release(&self) {
        if let Some(m) = &self.0 {
            // SAFETY: the mapping is a read-only view of a file that is not written; dropped
            // pages are refilled from the file on the next access.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

/// An example from its stored form (see [`super::store_write`]); None when its parts do not fit.
fn unflatten(
    kind: ExampleKind,
    mut ids: Vec<i64>,
    mask: Vec<u8>,
    prompt_len: usize,
    docs: Vec<u32>,
    part: usize,
) -> Option<Example> {
    if kind != ExampleKind::Tokens && prompt_len > ids.len() {
        return None;
    }
    Some(match kind {
        ExampleKind::Tokens | ExampleKind::Rows => Example::Tokens {
            ids,
            mask,
            prompt_len,
            docs,
        },
        ExampleKind::Pairs => {
            if prompt_len + part > ids.len() {
                return None;
            }
            let rejected = ids.split_off(prompt_len + part);
            let chosen = ids.split_off(prompt_len);
            Example::Pair {
                prompt: ids,
                chosen,
                rejected,
            }
        }
        ExampleKind::Unpaired => {
            let completion = ids.split_off(prompt_len);
            Example::Unpaired {
                prompt: ids,
                completion,
                label: part != 0,
            }
        }
    })
}

/// One split of the store, memory-mapped.
pub struct MappedSplit {
    ids: Bytes,
    offsets: Bytes,
    mask: Bytes,
    prompt: Bytes,
    docs: Option<Bytes>,
    parts: Option<Bytes>,
    kind: ExampleKind,
    id_bytes: usize,
    examples: usize,
    /// The examples of this split as indices into the files (u64 each), when it lists them.
    index: Option<Bytes>,
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    let s = b.get(i * 8..i * 8 + 8)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(s);
    Some(u64::from_le_bytes(w))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i * 4..i * 4 + 4)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(s);
    Some(u32::from_le_bytes(w))
}

impl MappedSplit {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples
    }

    /// Whether it has no examples.
    pub fn is_empty(&self) -> bool {
        self.examples == 0
    }

    /// Drops the pages read so far from memory (a pass over a large store stays small).
    pub fn release(&self) {
        for b in [&self.ids, &self.offsets, &self.mask, &self.prompt] {
            b.release();
        }
        for b in [&self.docs, &self.parts, &self.index].into_iter().flatten() {
            b.release();
        }
    }

    /// Example `i`.
    pub fn get(&self, i: usize) -> Result<Example> {
        let bad = || Error::Config(format!("the prepared data store has no example {i}"));
        if i >= self.examples {
            return Err(bad());
        }
        let i = match &self.index {
            Some(ix) => u64_at(ix.get(), i).ok_or_else(bad)? as usize,
            None => i,
        };
        let off = self.offsets.get();
        let (a, z) = (
            u64_at(off, i).ok_or_else(bad)? as usize,
            u64_at(off, i + 1).ok_or_else(bad)? as usize,
        );
        if z < a {
            return Err(bad());
        }
        let ids_b = self.ids.get();
        let mut ids = Vec::with_capacity(z - a);
        for t in a..z {
            let id = if self.id_bytes == 2 {
                let s = ids_b.get(t * 2..t * 2 + 2).ok_or_else(bad)?;
                u16::from_le_bytes([s[0], s[1]]) as i64
            } else {
                u32_at(ids_b, t).ok_or_else(bad)? as i64
            };
            ids.push(id);
        }
        let mb = self.mask.get();
        let mut mask = Vec::with_capacity(z - a);
        for t in a..z {
            let byte = *mb.get(t / 8).ok_or_else(bad)?;
            mask.push((byte >> (t % 8)) & 1);
        }
        let prompt_len = u32_at(self.prompt.get(), i).ok_or_else(bad)? as usize;
        let docs = match &self.docs {
            Some(d) => (a..z)
                .map(|t| u32_at(d.get(), t).ok_or_else(bad))
                .collect::<Result<Vec<u32>>>()?,
            None => vec![],
        };
        let part = match &self.parts {
            Some(p) => u32_at(p.get(), i).ok_or_else(bad)? as usize,
            None => 0,
        };
        unflatten(self.kind, ids, mask, prompt_len, docs, part).ok_or_else(bad)
    }

    /// Opens the files `<name>.*`; with `index` (a file and its length), the split is the
    /// examples it lists.
    pub(super) fn open(
        dir: &Path,
        name: &str,
        info: &SplitInfo,
        id_bytes: usize,
        index: Option<(&str, usize)>,
    ) -> Result<MappedSplit> {
        let f = |ext: &str| dir.join(format!("{name}.{ext}"));
        let s = MappedSplit {
            ids: Bytes::open(&f("ids"))?,
            offsets: Bytes::open(&f("offsets"))?,
            mask: Bytes::open(&f("mask"))?,
            prompt: Bytes::open(&f("prompt"))?,
            docs: if info.packed {
                Some(Bytes::open(&f("docs"))?)
            } else {
                None
            },
            parts: if info.packed {
                None
            } else {
                Some(Bytes::open(&f("parts"))?)
            },
            kind: info.kind,
            id_bytes,
            examples: info.examples,
            index: None,
        };
        // The files must agree with the manifest (and the offsets with each other).
        let ok = s.ids.get().len() == info.tokens * id_bytes
            && s.offsets.get().len() == (info.examples + 1) * 8
            && s.mask.get().len() == info.tokens.div_ceil(8)
            && s.prompt.get().len() == info.examples * 4
            && s.docs.as_ref().is_none_or(|d| d.get().len() == info.tokens * 4)
            && s.parts.as_ref().is_none_or(|p| p.get().len() == info.examples * 4)
            && (0..info.examples).all(|i| {
                matches!((u64_at(s.offsets.get(), i), u64_at(s.offsets.get(), i + 1)), (Some(a), Some(b)) if a <= b)
            })
            && u64_at(s.offsets.get(), info.examples) == Some(info.tokens as u64);
        if !ok {
            return Err(Error::bad_file(
                dir.display(),
                format!("the `{name}` files do not agree with manifest.json"),
            ));
        }
        let Some((file, n)) = index else {
            return Ok(s);
        };
        let ix = Bytes::open(&dir.join(file))?;
        let fits = ix.get().len() == n * 8
            && (0..n).all(|k| u64_at(ix.get(), k).is_some_and(|j| (j as usize) < info.examples));
        if !fits {
            return Err(Error::bad_file(
                dir.join(file).display(),
                "does not agree with manifest.json",
            ));
        }
        Ok(MappedSplit {
            examples: n,
            index: Some(ix),
            ..s
        })
    }
}

/// A split: in memory (csv rows, or data not stored yet) or memory-mapped from the store.
pub enum Split {
    Memory(Vec<Example>),
    Mapped(MappedSplit),
}

impl Split {
    /// The number of examples.
    pub fn len(&self) -> usize {
        match self {
            Split::Memory(v) => v.len(),
            Split::Mapped(m) => m.len(),
        }
    }

    /// Whether it has no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i` (a copy).
    pub fn get(&self, i: usize) -> Result<Example> {
        match self {
            Split::Memory(v) => v
                .get(i)
                .cloned()
                .ok_or_else(|| Error::Config(format!("the dataset has no example {i}"))),
            Split::Mapped(m) => m.get(i),
        }
    }

    /// Lets the kernel drop the pages of a mapped split read so far (nothing for one in
    /// memory): a long run touching a large store keeps its resident set small.
    pub fn release(&self) {
        if let Split::Mapped(m) = self {
            m.release();
        }
    }

    /// Every example, in order (a pass that keeps memory small: mapped pages are released
    /// as it goes).
    pub fn examples(&self) -> impl Iterator<Item = Result<Example>> + '_ {
        (0..self.len()).map(move |i| {
            if let (Split::Mapped(m), true) = (self, i % 65_536 == 65_535) {
                m.release();
            }
            self.get(i)
        })
    }
}

/// The store directory of a cache key.
pub fn dir_of(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("data-{key}"))
}

/// What a store holds besides its splits.
pub struct Stored {
    pub train: Split,
    pub eval: Split,
    pub num_classes: i64,
    pub num_features: i64,
    pub stats: PrepStats,
    /// The largest token id in the store (None for csv rows).
    pub max_id: Option<i64>,
    /// What the examples are.
    pub kind: ExampleKind,
}

/// Opens a store (None when there is none, or it does not agree with itself: a file changed,
/// missing, added or not a regular file).
pub fn open(dir: &Path) -> Option<Stored> {
    let text = crate::base::files::read_small_file(&dir.join("manifest.json")).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    if m.format != FORMAT || !(m.id_bytes == 2 || m.id_bytes == 4) || !files_match(dir, &m) {
        return None;
    }
    // Read from the ids themselves (not trusted from the manifest): every id is checked
    // against the model's vocabulary before training.
    let kind = match m.rows {
        Some(_) => ExampleKind::Rows,
        None => m.all.kind,
    };
    let max = match m.rows {
        Some(_) => None,
        None => Some(max_id(&dir.join("all.ids"), m.id_bytes).ok()?),
    };
    let (train, eval) = match m.rows {
        Some((t, e)) => (Split::Memory(t), Split::Memory(e)),
        None => {
            let train = match &m.packed {
                Some(p) => MappedSplit::open(dir, "train", p, m.id_bytes, None).ok()?,
                None => MappedSplit::open(
                    dir,
                    "all",
                    &m.all,
                    m.id_bytes,
                    Some(("train.index", m.train_examples)),
                )
                .ok()?,
            };
            let eval = MappedSplit::open(
                dir,
                "all",
                &m.all,
                m.id_bytes,
                Some(("eval.index", m.eval_examples)),
            )
            .ok()?;
            (Split::Mapped(train), Split::Mapped(eval))
        }
    };
    if train.is_empty() {
        return None;
    }
    Some(Stored {
        train,
        eval,
        num_classes: m.num_classes,
        num_features: m.num_features,
        stats: m.stats,
        max_id: max,
        kind,
    })
}
