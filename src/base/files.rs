//! Reading small input files (configs, JSON) safely: only regular files (a FIFO or a device
//! would block or never end), of a bounded size, as UTF-8; errors name the file.

use super::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The most a config-like file may hold.
pub const SMALL_FILE_LIMIT: u64 = 64 << 20;

/// Reads a regular file of at most [`SMALL_FILE_LIMIT`] bytes as UTF-8 text.
pub fn read_small_file(path: &Path) -> Result<String> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::bad_file(&shown, e.to_string()))?;
    if meta.is_dir() {
        return Err(Error::bad_file(&shown, "is a directory, not a file"));
    }
    if !meta.is_file() {
        return Err(Error::bad_file(
            &shown,
            "not a regular file (a FIFO or device would block or never end)",
        ));
    }
    if meta.len() > SMALL_FILE_LIMIT {
        return Err(Error::bad_file(
            &shown,
            format!(
                "{} bytes is too large for this kind of file (at most {SMALL_FILE_LIMIT})",
                meta.len()
            ),
        ));
    }
    let mut bytes = vec![];
    std::fs::File::open(path)
        .and_then(|f| f.take(SMALL_FILE_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::bad_file(&shown, e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| Error::bad_file(&shown, "not UTF-8 text"))
}
