//! The prepared-dataset store: a directory `<cache_dir>/data-<key>/` with a small JSON
//! manifest and, per split, memory-mapped binary files that a run reads without loading them:
//!
//! | file | contents |
//! |---|---|
//! | `manifest.json` | format, id width, example and token counts, classes, features, stats |
//! | `<split>.ids` | token ids, little-endian u16 (vocabularies up to 65,536) or u32 |
//! | `<split>.offsets` | u64 per example + 1: where each example's tokens start |
//! | `<split>.mask` | one bit per token (LSB first): 1 = a loss target |
//! | `<split>.prompt` | u32 per example: its prompt length |
//! | `<split>.docs` | u32 per token: its document in a packed window (only when packed) |
//!
//! csv rows are small and stay in the manifest. The directory is written under a temporary
//! name, every file fsynced, and renamed into place, so a crash leaves no half store; a store
//! whose files do not agree with its manifest is not used (the data is prepared again).

use super::{Example, PrepStats};
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: &str = "pzt-tokens-v1";

/// What `manifest.json` holds about one split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SplitInfo {
    examples: usize,
    tokens: usize,
    packed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    id_bytes: usize,
    num_classes: i64,
    num_features: i64,
    stats: PrepStats,
    train: SplitInfo,
    eval: SplitInfo,
    /// csv rows (train, eval).
    #[serde(default)]
    rows: Option<(Vec<Example>, Vec<Example>)>,
}

/// A read-only file, memory-mapped (empty files are not mapped).
struct Bytes(Option<memmap2::Mmap>);

impl Bytes {
    fn open(path: &Path) -> Result<Bytes> {
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
}

/// One split of the store, memory-mapped.
pub struct MappedSplit {
    ids: Bytes,
    offsets: Bytes,
    mask: Bytes,
    prompt: Bytes,
    docs: Option<Bytes>,
    id_bytes: usize,
    examples: usize,
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

    /// Example `i`.
    pub fn get(&self, i: usize) -> Result<Example> {
        let bad = || Error::Config(format!("the prepared data store has no example {i}"));
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
        Ok(Example::Tokens {
            ids,
            mask,
            prompt_len,
            docs,
        })
    }

    fn open(dir: &Path, name: &str, info: &SplitInfo, id_bytes: usize) -> Result<MappedSplit> {
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
            id_bytes,
            examples: info.examples,
        };
        // The files must agree with the manifest (and the offsets with each other).
        let ok = s.ids.get().len() == info.tokens * id_bytes
            && s.offsets.get().len() == (info.examples + 1) * 8
            && s.mask.get().len() == info.tokens.div_ceil(8)
            && s.prompt.get().len() == info.examples * 4
            && s.docs.as_ref().is_none_or(|d| d.get().len() == info.tokens * 4)
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
        Ok(s)
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

    /// Every example, in order.
    pub fn examples(&self) -> impl Iterator<Item = Result<Example>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn write_split(dir: &Path, name: &str, xs: &[Example], id_bytes: usize) -> Result<SplitInfo> {
    let (mut ids, mut offsets, mut mask, mut prompt, mut docs) =
        (vec![], vec![], vec![], vec![], vec![]);
    let packed = xs
        .iter()
        .any(|e| matches!(e, Example::Tokens { docs, .. } if !docs.is_empty()));
    let mut t = 0usize;
    for e in xs {
        let Example::Tokens {
            ids: e_ids,
            mask: e_mask,
            prompt_len,
            docs: e_docs,
        } = e
        else {
            continue;
        };
        offsets.extend_from_slice(&(t as u64).to_le_bytes());
        for (k, &id) in e_ids.iter().enumerate() {
            if id < 0 || (id_bytes == 2 && id > u16::MAX as i64) || id > u32::MAX as i64 {
                return Err(Error::Config(format!(
                    "token id {id} does not fit the store"
                )));
            }
            if id_bytes == 2 {
                ids.extend_from_slice(&(id as u16).to_le_bytes());
            } else {
                ids.extend_from_slice(&(id as u32).to_le_bytes());
            }
            let bit = t + k;
            if bit / 8 >= mask.len() {
                mask.push(0u8);
            }
            if e_mask.get(k).copied().unwrap_or(0) == 1 {
                mask[bit / 8] |= 1 << (bit % 8);
            }
            if packed {
                let d = e_docs.get(k).copied().unwrap_or(0);
                docs.extend_from_slice(&d.to_le_bytes());
            }
        }
        t += e_ids.len();
        prompt.extend_from_slice(&(*prompt_len as u32).to_le_bytes());
    }
    offsets.extend_from_slice(&(t as u64).to_le_bytes());
    let f = |ext: &str| dir.join(format!("{name}.{ext}"));
    write_file(&f("ids"), &ids)?;
    write_file(&f("offsets"), &offsets)?;
    write_file(&f("mask"), &mask)?;
    write_file(&f("prompt"), &prompt)?;
    if packed {
        write_file(&f("docs"), &docs)?;
    }
    Ok(SplitInfo {
        examples: prompt.len() / 4,
        tokens: t,
        packed,
    })
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
}

/// Writes a prepared dataset as a store, atomically.
pub fn write(
    dir: &Path,
    train: &[Example],
    eval: &[Example],
    num_classes: i64,
    num_features: i64,
    stats: &PrepStats,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let rows = matches!(train.first(), Some(Example::Row { .. }));
    let max_id = train
        .iter()
        .chain(eval)
        .filter_map(|e| match e {
            Example::Tokens { ids, .. } => ids.iter().max().copied(),
            Example::Row { .. } => None,
        })
        .max()
        .unwrap_or(0);
    let id_bytes = if max_id <= u16::MAX as i64 { 2 } else { 4 };
    let (ti, ei) = if rows {
        let z = SplitInfo {
            examples: 0,
            tokens: 0,
            packed: false,
        };
        (z.clone(), z)
    } else {
        (
            write_split(&tmp, "train", train, id_bytes)?,
            write_split(&tmp, "eval", eval, id_bytes)?,
        )
    };
    let m = Manifest {
        format: FORMAT.into(),
        id_bytes,
        num_classes,
        num_features,
        stats: stats.clone(),
        train: ti,
        eval: ei,
        rows: rows.then(|| (train.to_vec(), eval.to_vec())),
    };
    let text = serde_json::to_string(&m).map_err(|e| Error::Config(format!("manifest: {e}")))?;
    write_file(&tmp.join("manifest.json"), text.as_bytes())?;
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens a store (None when there is none, or it does not agree with itself).
pub fn open(dir: &Path) -> Option<Stored> {
    let text = crate::base::files::read_small_file(&dir.join("manifest.json")).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    if m.format != FORMAT || !(m.id_bytes == 2 || m.id_bytes == 4) {
        return None;
    }
    let (train, eval) = match m.rows {
        Some((t, e)) => (Split::Memory(t), Split::Memory(e)),
        None => (
            Split::Mapped(MappedSplit::open(dir, "train", &m.train, m.id_bytes).ok()?),
            Split::Mapped(MappedSplit::open(dir, "eval", &m.eval, m.id_bytes).ok()?),
        ),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(ids: &[i64], mask: &[u8], prompt_len: usize, docs: &[u32]) -> Example {
        Example::Tokens {
            ids: ids.to_vec(),
            mask: mask.to_vec(),
            prompt_len,
            docs: docs.to_vec(),
        }
    }

    #[test]
    fn examples_round_trip_through_the_store_and_bad_stores_are_not_used() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("pzt-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for big in [false, true] {
            let hi = if big { 70_000 } else { 300 };
            let train = vec![
                tok(
                    &[1, 2, hi, 4, 5, 6, 7, 8, 9],
                    &[0, 0, 1, 1, 0, 1, 1, 1, 1],
                    2,
                    &[],
                ),
                tok(&[3], &[1], 0, &[]),
            ];
            let eval = vec![tok(&[hi, 0], &[0, 1], 1, &[])];
            let d = dir.join(format!("data-{big}"));
            write(&d, &train, &eval, 0, 0, &PrepStats::default())?;
            let s = open(&d).ok_or_else(|| Error::Config("no store".into()))?;
            assert_eq!(s.train.len(), 2);
            for (i, e) in train.iter().enumerate() {
                assert_eq!(&s.train.get(i)?, e);
            }
            assert_eq!(s.eval.get(0)?, eval[0]);
            assert!(s.train.get(2).is_err());
            let ids =
                std::fs::metadata(d.join("train.ids")).map_err(|e| Error::Config(e.to_string()))?;
            assert_eq!(ids.len(), 10 * if big { 4 } else { 2 });
        }
        // Packed windows keep their documents.
        let d = dir.join("data-packed");
        let w = tok(&[1, 2, 3, 4], &[0, 1, 0, 1], 0, &[0, 0, 1, 1]);
        write(
            &d,
            std::slice::from_ref(&w),
            &[],
            0,
            0,
            &PrepStats::default(),
        )?;
        let s = open(&d).ok_or_else(|| Error::Config("no store".into()))?;
        assert_eq!(s.train.get(0)?, w);
        // A truncated file, or a manifest that does not match, is not used.
        let f = d.join("train.ids");
        std::fs::write(&f, [0u8; 3]).map_err(|e| Error::Config(e.to_string()))?;
        assert!(open(&d).is_none());
        std::fs::write(d.join("manifest.json"), "{}").map_err(|e| Error::Config(e.to_string()))?;
        assert!(open(&d).is_none());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
