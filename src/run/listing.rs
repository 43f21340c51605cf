//! What a run directory holds, read back without loading a model (`pzt runs`, `pzt report`):
//! the run's name and length from its newest checkpoint's `recipe.toml`, the steps done and the
//! eval metrics from `metrics.jsonl`, the machines it ran on from `environment.jsonl`, whether
//! a `pzt train` holds its lock, and its size.

use super::policy::CheckpointConfig;
use crate::base::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Its newest checkpoint is at the last step.
    Finished,
    /// A `pzt train` holds the run lock now.
    Running,
    /// It stopped before the last step (Ctrl-C, a crash, a kill); `pzt train` resumes it.
    Interrupted,
    /// The NaN watchdog stopped it (`diverged.json`); resuming the same recipe is refused.
    Diverged,
}

impl RunState {
    /// `finished`, `running`, `interrupted`, `diverged`.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Finished => "finished",
            RunState::Running => "running",
            RunState::Interrupted => "interrupted",
            RunState::Diverged => "diverged",
        }
    }
}

/// An eval metric's value at a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtStep {
    pub value: f64,
    pub step: u64,
}

/// A run directory, summarized.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub dir: PathBuf,
    /// `[run] name` of its recipe (the directory's name when it has no checkpoint).
    pub name: String,
    /// The last step with a metrics line or a checkpoint.
    pub steps_done: u64,
    /// `[train] steps` (None without a checkpoint to read it from).
    pub steps_total: Option<u64>,
    pub state: RunState,
    /// The checkpoints, oldest first: `(step, dir)`.
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// The metric that ranks evals: the recipe's `keep_best`, else `eval.loss`.
    pub key_metric: Option<String>,
    /// Whether larger values of `key_metric` are better.
    pub maximize: bool,
    pub best: Option<AtStep>,
    pub last: Option<AtStep>,
    /// Every metrics line, in order.
    pub metrics: Vec<Map<String, Value>>,
    /// Bytes of all files under the directory.
    pub bytes: u64,
    /// The lines of `environment.jsonl`: one per `pzt train` start or resume.
    pub environment: Vec<Map<String, Value>>,
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Appends this process's line to `<out_dir>/environment.jsonl`.
/// The recipe facts a run needs: `[run] name`, `[train] steps`, `[checkpoint]`.
fn recipe_facts(ckpt: &Path) -> Option<(Option<String>, Option<u64>, CheckpointConfig)> {
    let text = crate::base::files::read_small_file(&ckpt.join("recipe.toml")).ok()?;
    let t: toml::Table = toml::from_str(&text).ok()?;
    let name = t
        .get("run")
        .and_then(|r| r.get("name"))
        .and_then(|n| n.as_str())
        .map(String::from);
    let steps = t
        .get("train")
        .and_then(|r| r.get("steps"))
        .and_then(|n| n.as_integer())
        .and_then(|n| u64::try_from(n).ok());
    let ck = t
        .get("checkpoint")
        .cloned()
        .and_then(|c| c.try_into::<CheckpointConfig>().ok())
        .unwrap_or_default();
    Some((name, steps, ck))
}

fn lock_held(dir: &Path) -> bool {
    super::lock::held(dir)
}

/// Whether `dir` looks like a run directory (metrics or checkpoints).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join("metrics.jsonl").is_file() || dir.join("checkpoints").is_dir()
}

/// Summarizes the run directory `dir`.
pub fn read_run(dir: &Path) -> Result<RunInfo> {
    if !is_run_dir(dir) {
        return Err(Error::Config(format!(
            "`{}` is not a run directory (no metrics.jsonl, no checkpoints/)",
            dir.display()
        )));
    }
    let checkpoints = super::checkpoint::list(dir);
    let facts = checkpoints.last().and_then(|(_, p)| recipe_facts(p));
    let (name, steps_total, ck) = facts.unwrap_or((None, None, CheckpointConfig::default()));
    let metrics = super::metrics::read_metrics(&dir.join("metrics.jsonl"))?;
    let step_of = |m: &Map<String, Value>| m.get("step").and_then(Value::as_u64);
    let last_logged = metrics.iter().filter_map(step_of).max().unwrap_or(0);
    let last_ckpt = checkpoints.last().map(|(s, _)| *s).unwrap_or(0);
    let steps_done = last_logged.max(last_ckpt);
    let key_metric = ck.keep_best.clone().or_else(|| {
        metrics
            .iter()
            .any(|m| m.contains_key("eval.loss"))
            .then(|| "eval.loss".to_string())
    });
    let maximize = ck.keep_best.is_some() && ck.maximize();
    let (mut best, mut last) = (None::<AtStep>, None::<AtStep>);
    if let Some(k) = &key_metric {
        for m in &metrics {
            let (Some(value), Some(step)) = (m.get(k).and_then(Value::as_f64), step_of(m)) else {
                continue;
            };
            let here = AtStep { value, step };
            last = Some(here);
            let better = match best {
                None => true,
                Some(b) if maximize => value > b.value,
                Some(b) => value < b.value,
            };
            if better {
                best = Some(here);
            }
        }
    }
    let state = if lock_held(dir) {
        RunState::Running
    } else if steps_total.is_some_and(|t| last_ckpt >= t) {
        RunState::Finished
    } else if super::divergence::divergence(dir).is_some_and(|(s, ..)| s > last_ckpt) {
        RunState::Diverged
    } else {
        RunState::Interrupted
    };
    Ok(RunInfo {
        name: name.unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        dir: dir.to_path_buf(),
        steps_done,
        steps_total,
        state,
        checkpoints,
        key_metric,
        maximize,
        best,
        last,
        metrics,
        bytes: dir_bytes(dir),
        environment: super::metrics::read_metrics(&dir.join("environment.jsonl"))?,
    })
}

/// The runs in `root`: `root` itself when it is a run directory, else its subdirectories that
/// are, sorted by name; a run that cannot be read is listed with the reason, and the others
/// still are.
pub fn list_runs(root: &Path) -> Result<Vec<(PathBuf, Result<RunInfo>)>> {
    if !root.is_dir() {
        return Err(Error::Config(format!(
            "`{}` is not a directory of runs",
            root.display()
        )));
    }
    if is_run_dir(root) {
        return Ok(vec![(root.to_path_buf(), read_run(root))]);
    }
    let rd = std::fs::read_dir(root).map_err(|source| Error::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| is_run_dir(p))
        .collect();
    dirs.sort();
    Ok(dirs
        .into_iter()
        .map(|d| (d.clone(), read_run(&d)))
        .collect())
}

impl RunInfo {
    /// The summary as JSON (`pzt runs --json`).
    pub fn to_json(&self) -> Value {
        let at = |a: Option<AtStep>| a.map(|a| json!({ "value": a.value, "step": a.step }));
        json!({
            "dir": self.dir.display().to_string(),
            "name": self.name,
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "state": self.state.name(),
            "checkpoints": self.checkpoints.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "metric": self.key_metric,
            "best": at(self.best),
            "last": at(self.last),
            "bytes": self.bytes,
        })
    }
}
