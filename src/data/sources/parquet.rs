//! Reading parquet files a row group at a time: each row as the JSON object of its columns
//! (strings, numbers, lists of structs for conversations), handed over in numbered pieces.

use crate::base::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::path::Path;

fn reader(path: &Path) -> Result<SerializedFileReader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    SerializedFileReader::new(f)
        .map_err(|e| Error::bad_file(path.display(), format!("not a readable parquet file: {e}")))
}

/// Whether the file's schema has a top-level column `name`.
pub(super) fn has_column(path: &Path, name: &str) -> Result<bool> {
    let r = reader(path)?;
    let schema = r.metadata().file_metadata().schema_descr();
    Ok(schema
        .root_schema()
        .get_fields()
        .iter()
        .any(|f| f.name() == name))
}

/// Hands the rows of `path` over as `(row number from 1, JSON object)`, up to `piece` at a
/// time, reading one row group after another.
pub(super) fn row_pieces(
    path: &Path,
    piece: usize,
    mut each: impl FnMut(Vec<(usize, serde_json::Value)>) -> Result<()>,
) -> Result<()> {
    let r = reader(path)?;
    let bad = |n: usize, e: parquet::errors::ParquetError| {
        Error::bad_line(path.display(), n, format!("parquet row: {e}"))
    };
    let mut buf = Vec::with_capacity(piece);
    let mut n = 0usize;
    for g in 0..r.num_row_groups() {
        let group = r.get_row_group(g).map_err(|e| bad(n + 1, e))?;
        let rows = group.get_row_iter(None).map_err(|e| bad(n + 1, e))?;
        for row in rows {
            n += 1;
            let row = row.map_err(|e| bad(n, e))?;
            buf.push((n, row.to_json_value()));
            if buf.len() == piece {
                each(std::mem::take(&mut buf))?;
            }
        }
    }
    if !buf.is_empty() {
        each(buf)?;
    }
    Ok(())
}
