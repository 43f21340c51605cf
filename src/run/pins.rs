//! Pruning old checkpoints (`[checkpoint] keep_last`) and the pins that keep a checkpoint
//! another run starts from (`[model] checkpoint = ...`) out of its own run's pruning.

use super::checkpoint::{dir_of, io, list};
use crate::base::Result;
use std::path::{Path, PathBuf};

/// Deletes checkpoints beyond the newest `keep_last`, sparing `keep_step` and every checkpoint
/// another run still starts from (see [`pin`]).
pub fn prune(out_dir: &Path, keep_last: usize, keep_step: Option<u64>) -> Result<()> {
    let all = list(out_dir);
    let n = all.len();
    let pinned = pinned_steps(out_dir);
    for (i, (step, path)) in all.into_iter().enumerate() {
        if i + keep_last < n && Some(step) != keep_step && !pinned.contains(&step) {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Where the pins of a run's checkpoints are kept: `checkpoints/.pins/`.
fn pins_dir(out_dir: &Path) -> PathBuf {
    dir_of(out_dir).join(".pins")
}

/// Records that the run directory `by_run` is built from the checkpoint `checkpoint`
/// (`[model] checkpoint = ...`), so that the pruning of the checkpoint's own run (`keep_last`)
/// spares it for as long as `by_run` exists: a pin is the file
/// `<run>/checkpoints/.pins/step-<N>.<hash>` holding the dependent run's path. Nothing happens
/// for a directory that is not a step of a run.
pub fn pin(checkpoint: &Path, by_run: &Path) -> Result<()> {
    let checkpoint = checkpoint
        .canonicalize()
        .unwrap_or_else(|_| checkpoint.to_path_buf());
    let by = by_run
        .canonicalize()
        .unwrap_or_else(|_| by_run.to_path_buf());
    let (Some(name), Some(run)) = (
        checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        checkpoint.parent().and_then(Path::parent),
    ) else {
        return Ok(());
    };
    if !name.starts_with("step-") || dir_of(run) != checkpoint.parent().unwrap_or(run) {
        return Ok(());
    }
    let by_text = by.display().to_string();
    let dir = pins_dir(run);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let f = dir.join(format!(
        "{name}.{:016x}",
        crate::base::seed::fnv1a(by_text.as_bytes())
    ));
    if !f.is_file() {
        crate::base::outputs::write(&f, by_text.as_bytes())?;
    }
    Ok(())
}

/// The steps of `out_dir` that a run that still exists is built from.
pub fn pinned_steps(out_dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(pins_dir(out_dir)) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let by = crate::base::files::read_small_file(&e.path()).ok()?;
            // A dependent run that was deleted no longer holds the checkpoint.
            Path::new(by.trim()).exists().then_some(step)
        })
        .collect()
}
