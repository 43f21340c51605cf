//! What a MODEL argument of the commands names: a Hugging Face model directory, a checkpoint
//! directory, a run directory (its newest checkpoint; `RUN@best`, `RUN@latest`) or a recipe.

use crate::base::{Error, Result};
use std::path::{Path, PathBuf};

/// What a model path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPath {
    /// A HuggingFace model directory (config.json).
    Hf,
    /// A run checkpoint directory (state.json + recipe.toml).
    Checkpoint,
    /// A recipe file.
    Recipe,
}

/// The checkpoint a model argument names when it names a run: `RUN@latest` (its newest
/// checkpoint), `RUN@best` (the checkpoint of its best eval, by `[checkpoint] keep_best` or else
/// `eval.loss`), or a run directory itself (its newest checkpoint). Any other path is returned
/// as it is.
pub fn resolve_model(path: &Path) -> Result<PathBuf> {
    let text = path.to_string_lossy();
    let (run, which) = match text.rsplit_once('@') {
        Some((run, w @ ("best" | "latest"))) if !path.exists() => (PathBuf::from(run), w),
        _ if path.is_dir()
            && !path.join("config.json").is_file()
            && !path.join("state.json").is_file()
            && super::listing::is_run_dir(path) =>
        {
            (path.to_path_buf(), "latest")
        }
        _ => return Ok(path.to_path_buf()),
    };
    if !super::listing::is_run_dir(&run) {
        return Err(Error::Config(format!(
            "`{}`: `{}` is not a run directory (no metrics.jsonl, no checkpoints/)",
            path.display(),
            run.display()
        )));
    }
    let checkpoints = super::checkpoint::list(&run);
    let Some((_, newest)) = checkpoints.last().cloned() else {
        return Err(Error::Config(format!(
            "`{}`: the run {} has no checkpoint yet",
            path.display(),
            run.display()
        )));
    };
    if which == "latest" {
        return Ok(newest);
    }
    let info = super::listing::read_run(&run)?;
    let (Some(metric), Some(best)) = (&info.key_metric, info.best) else {
        return Err(Error::Config(format!(
            "`{}`: the run logged no eval metric, so it has no best checkpoint; use {}@latest",
            path.display(),
            run.display()
        )));
    };
    checkpoints
        .iter()
        .find(|(s, _)| *s == best.step)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            let kept: Vec<String> = checkpoints.iter().map(|(s, _)| format!("step-{s}")).collect();
            Error::Config(format!(
                "`{}`: the best {metric} ({:.4}) was at step {}, whose checkpoint was not kept (kept: {}); set `[checkpoint] keep_best = \"{metric}\"` to keep it",
                path.display(),
                best.value,
                best.step,
                kept.join(", ")
            ))
        })
}

/// Which kind of model `path` is, or why it is none.
pub fn model_path(path: &Path) -> Result<ModelPath> {
    if path.join("config.json").is_file() {
        return Ok(ModelPath::Hf);
    }
    if path.join("state.json").is_file() && path.join("recipe.toml").is_file() {
        return Ok(ModelPath::Checkpoint);
    }
    if path.is_dir() {
        return Err(Error::Config(format!(
            "`{}` is a directory but not a model: expected a HuggingFace model directory (config.json), a checkpoint directory (state.json, recipe.toml) or a run directory (its newest checkpoint; RUN@best, RUN@latest)",
            path.display()
        )));
    }
    if path.exists() {
        return Ok(ModelPath::Recipe);
    }
    Err(Error::Config(format!(
        "`{}` does not exist: expected a recipe file, a HuggingFace model directory (config.json) or a checkpoint directory (state.json, recipe.toml)",
        path.display()
    )))
}
