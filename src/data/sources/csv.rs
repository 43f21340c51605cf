//! CSV rows: numeric features and a target (a value, or an integer class).

use super::files::read;
use crate::base::{Error, Result};
use crate::data::spec::{CsvTask, Features};
use crate::data::Example;
use std::path::PathBuf;

/// The largest class label (labels are read as float32, exact up to 2^24).
const MAX_CLASS: f32 = 16_777_215.0;

pub(super) fn csv(cfg: &Features, files: &[PathBuf]) -> Result<(Vec<Example>, i64)> {
    let target = cfg.target.clone().unwrap_or_default();
    let mut out = vec![];
    let mut max_class = -1i64;
    for f in files {
        let text = read(f)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            continue;
        };
        let cols: Vec<&str> = header.split(',').map(|s| s.trim()).collect();
        let idx = |name: &str| {
            cols.iter().position(|c| *c == name).ok_or_else(|| {
                Error::bad_file(
                    f.display(),
                    format!("no column `{name}` (columns: {})", cols.join(", ")),
                )
            })
        };
        let fi: Vec<usize> = cfg.features.iter().map(|c| idx(c)).collect::<Result<_>>()?;
        let ti = idx(&target)?;
        for (ln, line) in lines {
            let vals: Vec<&str> = line.split(',').map(|s| s.trim()).collect();
            if vals.len() != cols.len() {
                return Err(Error::bad_line(
                    f.display(),
                    ln + 1,
                    format!(
                        "the row has {} values, the header {} columns",
                        vals.len(),
                        cols.len()
                    ),
                ));
            }
            let num = |i: usize| -> Result<f32> {
                vals.get(i)
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        Error::bad_line(
                            f.display(),
                            ln + 1,
                            format!(
                                "column `{}` is not a finite number",
                                cols.get(i).copied().unwrap_or("?")
                            ),
                        )
                    })
            };
            let x: Vec<f32> = fi.iter().map(|&i| num(i)).collect::<Result<_>>()?;
            let y = num(ti)?;
            if cfg.task == CsvTask::Classification {
                if y < 0.0 || y.fract() != 0.0 || y > MAX_CLASS {
                    return Err(Error::bad_line(
                        f.display(),
                        ln + 1,
                        format!("class `{y}` must be an integer from 0 to {MAX_CLASS}"),
                    ));
                }
                max_class = max_class.max(y as i64);
            }
            out.push(Example::Row { x, y });
        }
    }
    Ok((out, max_class + 1))
}
