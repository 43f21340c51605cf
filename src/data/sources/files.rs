//! Data files: patterns with globs in the file-name part, and reading them.

use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pat[1..], s) || (!s.is_empty() && glob_match(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Expands file patterns (globs in the file-name part) relative to `base`, sorted.
pub fn expand_files(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in patterns {
        let full = base.join(p);
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains('*') || name.contains('?') {
            // A bare pattern (`*.txt` beside a recipe given without a directory) is in `.`.
            let dir = match full.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let rd = std::fs::read_dir(&dir).map_err(|e| {
                Error::Config(format!(
                    "[data] files: pattern `{p}`: cannot read the directory {}: {e}",
                    dir.display()
                ))
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.file_name()
                            .map(|n| glob_match(name.as_bytes(), n.to_string_lossy().as_bytes()))
                            .unwrap_or(false)
                })
                .collect();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "[data] files: pattern `{p}` matches no file in {}",
                    dir.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            if !full.is_file() {
                return Err(Error::Config(format!(
                    "[data] files: `{}` does not exist or is not a file",
                    full.display()
                )));
            }
            out.push(full);
        }
    }
    Ok(out)
}

pub(super) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(glob_match(b"part-??.jsonl", b"part-07.jsonl"));
        assert!(!glob_match(b"part-??.jsonl", b"part-7.jsonl"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"*.txt", b"a.txt.bak"));
    }
}
