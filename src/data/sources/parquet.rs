//! Reading parquet files a row group at a time: each row as the JSON object of its columns
//! (strings, numbers, lists of structs for conversations), handed over in numbered pieces.

use crate::base::{Error, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
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

/// Whether a value holds raw bytes anywhere (a BYTE_ARRAY without a UTF8/STRING annotation),
/// which JSON would show as base64 text.
fn has_bytes(f: &Field) -> bool {
    match f {
        Field::Bytes(_) => true,
        Field::Group(r) => r.get_column_iter().any(|(_, f)| has_bytes(f)),
        Field::ListInternal(l) => l.elements().iter().any(has_bytes),
        Field::MapInternal(m) => m
            .entries()
            .iter()
            .any(|(k, v)| has_bytes(k) || has_bytes(v)),
        _ => false,
    }
}

/// Hands the rows of `path` over as `(row number from 1, JSON object)`, up to `piece` at a
/// time, reading one row group after another. The columns `text_columns` are read as text: one
/// that holds binary data is an error (its bytes are not text, and as JSON they would be
/// base64).
pub(super) fn row_pieces(
    path: &Path,
    piece: usize,
    text_columns: &[&str],
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
            if let Some((name, _)) = row
                .get_column_iter()
                .find(|(name, f)| text_columns.contains(&name.as_str()) && has_bytes(f))
            {
                return Err(Error::bad_line(
                    path.display(),
                    n,
                    format!("column `{name}` holds binary data (BYTE_ARRAY without a UTF8/STRING annotation), not text; write it as a string column"),
                ));
            }
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
