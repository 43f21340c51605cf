//! Checksums of a checkpoint's files: `manifest.json` records, for every file, its size and
//! CRC-32C, and for a safetensors file the CRC-32C of each tensor's bytes. Verifying reads
//! the files (memory-mapped, nothing is decoded into tensors) and names the file and the
//! tensor a damaged byte is in.

use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The manifest's file name in a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub files: BTreeMap<String, FileSum>,
}

/// One file's size and checksums.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    pub bytes: u64,
    pub crc32c: String,
    /// Per tensor (safetensors files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tensors: BTreeMap<String, String>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    /// Every file has its recorded size and checksums.
    Intact { files: usize, bytes: u64 },
    /// The checkpoint has no manifest (written before pzt recorded checksums).
    NoManifest,
}

fn hex(c: u32) -> String {
    format!("{c:08x}")
}

/// The bytes of a regular file, memory-mapped (an empty file is an empty map).
fn map(path: &Path) -> std::io::Result<Option<memmap2::Mmap>> {
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the map is only read, and checkpoint files are not written after they are
    // complete (a new checkpoint is a new directory).
    Ok(Some(unsafe { memmap2::Mmap::map(&f)? }))
}

fn tensor_sums(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    Some(
        st.tensors()
            .into_iter()
            .map(|(name, view)| (name, hex(crc32c::crc32c(view.data()))))
            .collect(),
    )
}

fn sum_file(path: &Path) -> std::io::Result<FileSum> {
    let m = map(path)?;
    let bytes: &[u8] = m.as_deref().unwrap_or(&[]);
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    Ok(FileSum {
        bytes: bytes.len() as u64,
        crc32c: hex(crc32c::crc32c(bytes)),
        tensors: if is_st {
            tensor_sums(bytes).unwrap_or_default()
        } else {
            BTreeMap::new()
        },
    })
}

/// Writes `dir/manifest.json` with the checksums of `files` (names in `dir`), and returns its
/// path (for the caller to fsync).
pub fn write(dir: &Path, files: &[&str]) -> Result<std::path::PathBuf> {
    let mut m = Manifest {
        format: 1,
        files: BTreeMap::new(),
    };
    for f in files {
        let p = dir.join(f);
        let s = sum_file(&p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })?;
        m.files.insert(f.to_string(), s);
    }
    let text = serde_json::to_string_pretty(&m)
        .map_err(|e| Error::Config(format!("checkpoint manifest: {e}")))?;
    let mp = dir.join(MANIFEST);
    std::fs::write(&mp, text).map_err(|source| Error::Io {
        path: mp.display().to_string(),
        source,
    })?;
    Ok(mp)
}

fn damaged(dir: &Path, why: String) -> Error {
    Error::Config(format!("checkpoint {} is damaged: {why}", dir.display()))
}

/// Checks every file of checkpoint `dir` against its manifest.
pub fn verify(dir: &Path) -> Result<Verified> {
    let mp = dir.join(MANIFEST);
    if !mp.exists() {
        return Ok(Verified::NoManifest);
    }
    let text = crate::base::files::read_small_file(&mp).map_err(|e| damaged(dir, e.to_string()))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| damaged(dir, format!("{MANIFEST}: {e}")))?;
    let mut total = 0;
    for (name, want) in &m.files {
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(damaged(dir, format!("{MANIFEST} names the file `{name}`")));
        }
        let p = dir.join(name);
        let mm = map(&p).map_err(|e| damaged(dir, format!("{name}: {e}")))?;
        let bytes: &[u8] = mm.as_deref().unwrap_or(&[]);
        if bytes.len() as u64 != want.bytes {
            return Err(damaged(
                dir,
                format!(
                    "{name} is {} bytes, {MANIFEST} says {} (truncated or replaced)",
                    bytes.len(),
                    want.bytes
                ),
            ));
        }
        if hex(crc32c::crc32c(bytes)) != want.crc32c {
            return Err(damaged(dir, locate_damage(name, bytes, want)));
        }
        total += want.bytes;
    }
    Ok(Verified::Intact {
        files: m.files.len(),
        bytes: total,
    })
}

/// Which tensor of a file whose checksum differs holds the damage.
fn locate_damage(name: &str, bytes: &[u8], want: &FileSum) -> String {
    if want.tensors.is_empty() {
        return format!("{name} does not match its checksum");
    }
    let Some(have) = tensor_sums(bytes) else {
        return format!("{name}: the safetensors header is damaged");
    };
    let bad: Vec<&str> = want
        .tensors
        .iter()
        .filter(|(t, sum)| have.get(*t) != Some(*sum))
        .map(|(t, _)| t.as_str())
        .collect();
    match bad.as_slice() {
        [] => format!("{name}: the safetensors header is damaged"),
        [one] => format!("{name}: tensor `{one}` is damaged (its checksum differs)"),
        many => format!(
            "{name}: tensors {} are damaged (their checksums differ)",
            many.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
