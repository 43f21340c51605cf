//! Writing the prepared-dataset store ([`super::store`]) as the examples stream in: every
//! example goes to the `all.*` files in source order, the split becomes `train.index` and
//! `eval.index`, and packing streams the training examples (read back from the mapped files)
//! into `train.*` windows. Everything is written under a temporary directory, fsynced, and
//! renamed into place.

use super::pack::Packer;
use super::store::{Manifest, MappedSplit, SplitInfo, FORMAT};
use super::{split_indices, Example, ExampleKind, PrepStats};
use crate::base::atomic_dir::AtomicDir;
use crate::base::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

struct File {
    path: PathBuf,
    w: BufWriter<std::fs::File>,
}

impl File {
    fn create(path: PathBuf) -> Result<File> {
        let f = std::fs::File::create(&path).map_err(io(&path))?;
        Ok(File {
            w: BufWriter::with_capacity(1 << 20, f),
            path,
        })
    }
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(io(&self.path))
    }
    fn close(self) -> Result<()> {
        let path = self.path;
        let f = self.w.into_inner().map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io(&path))
    }
}

/// Writes the `<name>.*` files of a split, one example at a time.
pub struct SplitWriter {
    ids: File,
    offsets: File,
    mask: File,
    prompt: File,
    docs: Option<File>,
    /// Per example: a pair's chosen length, an unpaired row's label (not for packed windows).
    parts: Option<File>,
    /// The kind of the examples written (the first sets it).
    kind: Option<ExampleKind>,
    id_bytes: usize,
    tokens: u64,
    examples: usize,
    bits: u8,
    nbits: u32,
}

/// An example as the store's files hold it: its tokens, their loss bits, the prompt length,
/// the documents of a packed window, and its `parts` value.
struct Flat<'a> {
    ids: std::borrow::Cow<'a, [i64]>,
    mask: std::borrow::Cow<'a, [u8]>,
    prompt_len: usize,
    docs: &'a [u32],
    part: u32,
}

/// How `e` is stored: a pair as prompt, chosen and rejected one after another (the loss on
/// both completions, the chosen length in `parts`); an unpaired row as prompt and completion
/// (its label in `parts`).
fn flatten(e: &Example) -> Result<Flat<'_>> {
    use std::borrow::Cow;
    let joined = |p: &[i64], rest: &[&[i64]]| {
        let mut ids = p.to_vec();
        let mut mask = vec![0u8; p.len()];
        for r in rest {
            ids.extend_from_slice(r);
            mask.extend(std::iter::repeat_n(1u8, r.len()));
        }
        (Cow::Owned(ids), Cow::Owned(mask))
    };
    Ok(match e {
        Example::Tokens {
            ids,
            mask,
            prompt_len,
            docs,
        } => Flat {
            ids: Cow::Borrowed(ids),
            mask: Cow::Borrowed(mask),
            prompt_len: *prompt_len,
            docs,
            part: 0,
        },
        Example::Pair {
            prompt,
            chosen,
            rejected,
        } => {
            let (ids, mask) = joined(prompt, &[chosen, rejected]);
            Flat {
                ids,
                mask,
                prompt_len: prompt.len(),
                docs: &[],
                part: chosen.len() as u32,
            }
        }
        Example::Unpaired {
            prompt,
            completion,
            label,
        } => {
            let (ids, mask) = joined(prompt, &[completion]);
            Flat {
                ids,
                mask,
                prompt_len: prompt.len(),
                docs: &[],
                part: *label as u32,
            }
        }
        Example::Row { .. } => {
            return Err(Error::Config(
                "the token store holds token examples only".into(),
            ))
        }
    })
}

impl SplitWriter {
    /// Starts the files `<name>.*` in `dir` (`docs` for packed windows).
    pub fn create(dir: &Path, name: &str, id_bytes: usize, docs: bool) -> Result<SplitWriter> {
        let f = |ext: &str| File::create(dir.join(format!("{name}.{ext}")));
        let mut w = SplitWriter {
            ids: f("ids")?,
            offsets: f("offsets")?,
            mask: f("mask")?,
            prompt: f("prompt")?,
            docs: if docs { Some(f("docs")?) } else { None },
            parts: if docs { None } else { Some(f("parts")?) },
            kind: None,
            id_bytes,
            tokens: 0,
            examples: 0,
            bits: 0,
            nbits: 0,
        };
        w.offsets.put(&0u64.to_le_bytes())?;
        Ok(w)
    }

    /// How many examples it holds.
    pub fn count(&self) -> usize {
        self.examples
    }

    /// Appends one token example.
    pub fn push(&mut self, e: &Example) -> Result<()> {
        if self.examples.is_multiple_of(1024) {
            crate::base::interrupt::check("preparing the data")?;
        }
        match self.kind {
            None => self.kind = Some(e.kind()),
            Some(k) if k != e.kind() => {
                return Err(Error::Config(format!(
                    "[data]: the rows mix {} and {}; a dataset holds one kind",
                    k.describe(),
                    e.kind().describe()
                )))
            }
            Some(_) => {}
        }
        let Flat {
            ids,
            mask,
            prompt_len,
            docs,
            part,
        } = flatten(e)?;
        if let Some(p) = &mut self.parts {
            p.put(&part.to_le_bytes())?;
        }
        for (k, &id) in ids.iter().enumerate() {
            let max = if self.id_bytes == 2 {
                u16::MAX as i64
            } else {
                u32::MAX as i64
            };
            if !(0..=max).contains(&id) {
                return Err(Error::Config(format!(
                    "token id {id} does not fit the store's {}-byte ids",
                    self.id_bytes
                )));
            }
            if self.id_bytes == 2 {
                self.ids.put(&(id as u16).to_le_bytes())?;
            } else {
                self.ids.put(&(id as u32).to_le_bytes())?;
            }
            if mask.get(k).copied().unwrap_or(0) == 1 {
                self.bits |= 1 << self.nbits;
            }
            self.nbits += 1;
            if self.nbits == 8 {
                self.mask.put(&[self.bits])?;
                self.bits = 0;
                self.nbits = 0;
            }
            if let Some(d) = &mut self.docs {
                d.put(&docs.get(k).copied().unwrap_or(0).to_le_bytes())?;
            }
        }
        self.tokens += ids.len() as u64;
        self.offsets.put(&self.tokens.to_le_bytes())?;
        self.prompt.put(&(prompt_len as u32).to_le_bytes())?;
        self.examples += 1;
        Ok(())
    }

    /// Flushes and syncs the files.
    pub fn finish(mut self) -> Result<SplitInfo> {
        if self.nbits > 0 {
            self.mask.put(&[self.bits])?;
        }
        let packed = self.docs.is_some();
        for f in [self.ids, self.offsets, self.mask, self.prompt] {
            f.close()?;
        }
        for f in [self.docs, self.parts].into_iter().flatten() {
            f.close()?;
        }
        Ok(SplitInfo {
            examples: self.examples,
            tokens: self.tokens as usize,
            packed,
            kind: self.kind.unwrap_or_default(),
        })
    }
}

fn write_small(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path.to_path_buf())?;
    f.put(bytes)?;
    f.close()
}

/// A store being written into a temporary directory next to its final place.
/// Which examples are held out for evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    /// A fraction of them, chosen from the seed (`eval_fraction`).
    Fraction(f64),
    /// Those from this one on: the examples of `eval_files`, written after the training ones.
    From(usize),
}

pub struct StoreBuilder {
    out: AtomicDir,
    id_bytes: usize,
}

impl StoreBuilder {
    /// Starts a store for `dir` whose ids fit `id_bytes` (2 or 4).
    pub fn new(dir: &Path, id_bytes: usize) -> Result<StoreBuilder> {
        if let Some(parent) = dir.parent().filter(|p| p.is_dir()) {
            remove_orphans(parent);
        }
        Ok(StoreBuilder {
            out: AtomicDir::create(dir)?,
            id_bytes,
        })
    }

    pub fn all(&self) -> Result<SplitWriter> {
        SplitWriter::create(self.out.path(), "all", self.id_bytes, false)
    }

    /// The writer of an intermediate set of examples `name` (a mixture's source).
    pub fn part(&self, name: &str) -> Result<SplitWriter> {
        SplitWriter::create(self.out.path(), name, self.id_bytes, false)
    }

    /// The intermediate set `name`, memory-mapped.
    pub fn open_part(&self, name: &str, info: &SplitInfo) -> Result<MappedSplit> {
        MappedSplit::open(self.out.path(), name, info, self.id_bytes, None)
    }

    /// Deletes the intermediate sets `src-0 .. src-{n-1}`.
    pub fn remove_parts(&self, n: usize) {
        for k in 0..n {
            for ext in ["ids", "offsets", "mask", "prompt", "parts"] {
                let _ = std::fs::remove_file(self.out.path().join(format!("src-{k}.{ext}")));
            }
        }
    }

    /// Splits the written examples (as `holdout` says), packs the training ones into `window`-token windows if
    /// asked, writes the manifest and moves the store into place.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        all: SplitInfo,
        holdout: Holdout,
        seed: u64,
        pack: Option<usize>,
        num_classes: i64,
        stats: &PrepStats,
    ) -> Result<()> {
        if all.examples == 0 {
            return Err(Error::Config("[data]: the dataset is empty".into()));
        }
        let (train, eval) = match holdout {
            Holdout::Fraction(f) => split_indices(all.examples, f, seed),
            Holdout::From(n) => ((0..n).collect(), (n..all.examples).collect()),
        };
        if train.is_empty() {
            return Err(Error::Config(
                "the training split is empty (too few examples)".into(),
            ));
        }
        for (name, idx) in [("train.index", &train), ("eval.index", &eval)] {
            let bytes: Vec<u8> = idx.iter().flat_map(|&i| (i as u64).to_le_bytes()).collect();
            write_small(&self.out.path().join(name), &bytes)?;
        }
        let packed = match pack {
            None => None,
            Some(window) => {
                let src = MappedSplit::open(
                    self.out.path(),
                    "all",
                    &all,
                    self.id_bytes,
                    Some(("train.index", train.len())),
                )?;
                let mut w = SplitWriter::create(self.out.path(), "train", self.id_bytes, true)?;
                let mut p = Packer::new(window);
                for k in 0..src.len() {
                    if k % 65_536 == 65_535 {
                        src.release();
                    }
                    if let Some(done) = p.push(src.get(k)?) {
                        w.push(&done)?;
                    }
                }
                if let Some(last) = p.finish() {
                    w.push(&last)?;
                }
                Some(w.finish()?)
            }
        };
        let m = Manifest {
            format: FORMAT.into(),
            id_bytes: self.id_bytes,
            num_classes,
            num_features: 0,
            stats: stats.clone(),
            all,
            packed,
            train_examples: train.len(),
            eval_examples: eval.len(),
            rows: None,
            checksums: Default::default(),
            max_id: Some(super::store::max_id(
                &self.out.path().join("all.ids"),
                self.id_bytes,
            )?),
        };
        self.place(m)
    }

    /// Stores csv rows (kept in the manifest) instead of token files.
    pub fn finish_rows(
        self,
        rows: (Vec<Example>, Vec<Example>),
        num_classes: i64,
        num_features: i64,
        stats: &PrepStats,
    ) -> Result<()> {
        let m = Manifest {
            format: FORMAT.into(),
            id_bytes: self.id_bytes,
            num_classes,
            num_features,
            stats: stats.clone(),
            all: SplitInfo::default(),
            packed: None,
            train_examples: rows.0.len(),
            eval_examples: rows.1.len(),
            rows: Some(rows),
            checksums: Default::default(),
            max_id: None,
        };
        self.place(m)
    }

    fn place(self, mut m: Manifest) -> Result<()> {
        let rd = std::fs::read_dir(self.out.path()).map_err(io(self.out.path()))?;
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let sum = super::store::checksum(&e.path()).ok_or_else(|| {
                Error::Config(format!("{}: cannot be read back", e.path().display()))
            })?;
            m.checksums.insert(name, sum);
        }
        let text =
            serde_json::to_string(&m).map_err(|e| Error::Config(format!("manifest: {e}")))?;
        write_small(&self.out.path().join("manifest.json"), text.as_bytes())?;
        self.out.replace().map(|_| ())
    }
}

/// Removes the temporary store directories (`.tmp-data-*-<pid>`) in `parent` that processes
/// which are gone left behind (a crash, `kill -9`).
fn remove_orphans(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".tmp-data-")
            .and_then(|r| r.rsplit('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::open;

    fn tok(ids: &[i64], mask: &[u8], prompt_len: usize) -> Example {
        Example::Tokens {
            ids: ids.to_vec(),
            mask: mask.to_vec(),
            prompt_len,
            docs: vec![],
        }
    }

    fn store(dir: &Path, xs: &[Example], id_bytes: usize, pack: Option<usize>) -> Result<()> {
        let b = StoreBuilder::new(dir, id_bytes)?;
        let mut all = b.all()?;
        for e in xs {
            all.push(e)?;
        }
        let info = all.finish()?;
        b.finish(
            info,
            Holdout::Fraction(0.34),
            5,
            pack,
            0,
            &PrepStats::default(),
        )
    }

    #[test]
    fn examples_round_trip_and_bad_stores_are_not_used() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("pzt-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (id_bytes, hi) in [(2, 300), (4, 70_000)] {
            let xs = vec![
                tok(
                    &[1, 2, hi, 4, 5, 6, 7, 8, 9],
                    &[0, 0, 1, 1, 0, 1, 1, 1, 1],
                    2,
                ),
                tok(&[3], &[1], 0),
                tok(&[hi, 0], &[0, 1], 1),
            ];
            let d = dir.join(format!("data-{id_bytes}"));
            store(&d, &xs, id_bytes, None)?;
            let s = open(&d).ok_or_else(|| Error::Config("no store".into()))?;
            let (train, eval) = split_indices(3, 0.34, 5);
            assert_eq!((s.train.len(), s.eval.len()), (train.len(), eval.len()));
            for (k, &i) in train.iter().enumerate() {
                assert_eq!(s.train.get(k)?, xs[i]);
            }
            for (k, &i) in eval.iter().enumerate() {
                assert_eq!(s.eval.get(k)?, xs[i]);
            }
            assert!(s.train.get(train.len()).is_err());
            let n =
                std::fs::metadata(d.join("all.ids")).map_err(|e| Error::Config(e.to_string()))?;
            assert_eq!(n.len() as usize, 12 * id_bytes);
        }
        // Packed windows keep their documents; a small id width refuses large ids.
        let d = dir.join("data-packed");
        let xs = vec![
            tok(&[1, 2], &[0, 1], 0),
            tok(&[3, 4], &[1, 1], 0),
            tok(&[5], &[1], 0),
        ];
        store(&d, &xs, 2, Some(8))?;
        let s = open(&d).ok_or_else(|| Error::Config("no store".into()))?;
        assert_eq!(s.train.len(), 1);
        let Example::Tokens { ids, docs, .. } = s.train.get(0)? else {
            return Err(Error::Config("not tokens".into()));
        };
        // The two training examples in one window, each its own document.
        assert_eq!(docs.len(), ids.len());
        assert_eq!(docs.first(), Some(&0));
        assert_eq!(docs.last(), Some(&1));
        assert!(store(&dir.join("data-big"), &[tok(&[70_000], &[1], 0)], 2, None).is_err());
        // A truncated file, or a manifest that does not match, is not used.
        std::fs::write(d.join("all.ids"), [0u8; 3]).map_err(|e| Error::Config(e.to_string()))?;
        assert!(open(&d).is_none());
        std::fs::write(d.join("manifest.json"), "{}").map_err(|e| Error::Config(e.to_string()))?;
        assert!(open(&d).is_none());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
