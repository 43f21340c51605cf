//! `metrics.jsonl`: one JSON object per logged step, appended and flushed as the run goes.

use crate::base::{Error, Result};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Fields that depend on the wall clock (everything else is deterministic).
pub const TIMING_FIELDS: [&str; 2] = ["tokens_per_s", "elapsed_s"];

/// Appends metric lines.
pub struct MetricsWriter {
    file: File,
    path: PathBuf,
}

impl MetricsWriter {
    /// Opens `path` for appending, first dropping lines of steps after `keep_through` (a
    /// resumed run rewrites the steps it repeats).
    pub fn open(path: &Path, keep_through: Option<u64>) -> Result<MetricsWriter> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(step) = keep_through {
            if let Ok(text) = std::fs::read_to_string(path) {
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .map(|s| s <= step)
                            .unwrap_or(false)
                    })
                    .collect();
                let mut out = kept.join("\n");
                if !out.is_empty() {
                    out.push('\n');
                }
                std::fs::write(path, out).map_err(io)?;
            }
        } else if path.exists() {
            std::fs::write(path, "").map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(MetricsWriter {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes one line.
    pub fn write(&mut self, fields: &Map<String, Value>) -> Result<()> {
        let line =
            serde_json::to_string(fields).map_err(|e| Error::Config(format!("metrics: {e}")))?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|source| Error::Io {
                path: self.path.display().to_string(),
                source,
            })
    }
}

/// Reads `metrics.jsonl` (lines that are not JSON objects, such as a line cut by a crash, are
/// skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<Map<String, Value>>> {
    // Checked before opening: opening a FIFO would wait for a writer.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::BadFile {
                path: path.display().to_string(),
                line: None,
                message: "not a regular file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                source,
            })
        }
    }
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = vec![];
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&line) {
            out.push(m);
        }
    }
    Ok(out)
}
