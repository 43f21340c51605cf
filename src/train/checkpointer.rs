//! The run directory's side of training: the run lock, debris of an interrupted write, the pin
//! of the checkpoint the model starts from, the frozen base a checkpoint records, the best
//! value of `[checkpoint] keep_best`, when a checkpoint is due, writing and pruning them,
//! resuming from the newest one (with the checks a resume must pass), the environment record
//! and the divergence marker. Every rank has one; rank 0 alone writes.

use super::optim::Optimizer;
use super::session::Session;
use crate::base::{Error, Result};
use crate::params::Parameter;
use crate::run::checkpoint::{self, BaseRecord, TrainState};
use crate::run::lock::RunLock;
use crate::run::CheckpointConfig;
use crate::spec::RunSpec;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// A checkpoint further along than the recipe's steps: continue with more, or start a new run.
fn past_steps(dir: &Path, at: u64, steps: u64, name: &str) -> Result<()> {
    if at <= steps {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} is at step {at}, past [train] steps = {steps}; raise steps to continue this run, or start a new one in its own directory: --set 'run.name=\"{name}-2\"' (when the recipe sets no out_dir) or --set 'run.out_dir=\"...\"'",
        dir.display(),
    )))
}

/// A checkpoint written by a data-parallel run of another size.
fn same_world(dir: &Path, was: u64, size: usize) -> Result<()> {
    if was == size as u64 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} was written by a run on {} process(es), and this one has {}: resume it on {} (`pzt train --nproc {}`, or WORLD_SIZE={}), or train into another out_dir",
        dir.display(),
        was,
        size,
        was,
        was,
        was,
    )))
}

/// The generator state of `rank` in the checkpoint `dir`.
fn rank_rng<'a>(dir: &Path, state: &'a TrainState, rank: usize) -> Result<&'a String> {
    match rank {
        0 => Some(&state.rng_cpu),
        r => state.rng_ranks.get(r - 1),
    }
    .ok_or_else(|| {
        Error::Config(format!(
            "{}: no generator state for rank {rank}",
            dir.display()
        ))
    })
}

/// Where a resumed run continues.
pub struct Resumed {
    /// The step of the checkpoint's directory.
    pub from: u64,
    /// The checkpoint's directory.
    pub dir: PathBuf,
    /// Optimizer steps completed.
    pub step: u64,
    /// The data cursor's position.
    pub cursor: u64,
    /// The last eval metrics.
    pub metrics: Map<String, Value>,
}

/// The run directory of a run in progress, and what its checkpoints record.
pub struct Checkpointer {
    out_dir: PathBuf,
    config: CheckpointConfig,
    /// The recipe each checkpoint holds (and resumes compare with).
    recipe_toml: String,
    /// Whether this process writes the run's files (rank 0).
    writes: bool,
    /// The frozen parameters this run trains against (recorded in each checkpoint).
    base: Option<BaseRecord>,
    /// The best value of `keep_best` so far and its step.
    best: Option<(f64, u64)>,
    /// One `pzt train` per run directory (held by rank 0).
    _lock: Option<RunLock>,
}

impl Checkpointer {
    /// The run directory of `spec`: when this process `writes`, creates it, takes its lock,
    /// cleans the debris of earlier crashes and pins the checkpoint the model starts from.
    /// Returns the warning to show when that pin failed.
    pub fn take(spec: &RunSpec, writes: bool) -> Result<(Checkpointer, Option<String>)> {
        let out_dir = spec.run.out_dir.clone();
        let (mut lock, mut pin_failed) = (None, None);
        if writes {
            std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
                path: out_dir.display().to_string(),
                source,
            })?;
            let l = RunLock::take(&out_dir)?;
            l.clean_debris(&checkpoint::dir_of(&out_dir));
            lock = Some(l);
            // A checkpoint in a directory this user cannot write (a shared one) can still be
            // started from; only its protection from the other run's pruning is lost: said once.
            if let Some(from) = &spec.model_checkpoint {
                pin_failed = crate::run::pin(from, &out_dir).err().map(|e| {
                    format!("warning: could not pin {} against its run's keep_last ({e}); that run may prune it", from.display())
                });
            }
        }
        let c = Checkpointer {
            out_dir,
            config: spec.checkpoint.clone(),
            recipe_toml: spec.recipe_toml.clone(),
            writes,
            base: None,
            best: None,
            _lock: lock,
        };
        Ok((c, pin_failed))
    }

    /// Records what the frozen parameters of the session's model are.
    pub fn record_base(&mut self, session: &Session) -> Result<()> {
        self.base = BaseRecord::of(&session.tree, session.spec.model_source.as_deref())?;
        Ok(())
    }

    /// The frozen parameters this run trains against.
    pub fn base(&self) -> Option<&BaseRecord> {
        self.base.as_ref()
    }

    /// The best value of `keep_best` so far and its step.
    pub fn best(&self) -> Option<(f64, u64)> {
        self.best
    }

    /// Whether this process writes the run's files.
    pub fn writes(&self) -> bool {
        self.writes
    }

    /// Loads the newest checkpoint, if any, into `params` and `opt` and this process's
    /// generator (`rank` of `size`), after the checks a resume must pass; returns where the
    /// run continues. Refuses a run directory whose run diverged.
    pub fn resume(
        &mut self,
        session: &Session,
        params: &[Parameter],
        opt: &mut Optimizer,
        (rank, size): (usize, usize),
    ) -> Result<Option<Resumed>> {
        let spec = &session.spec;
        let latest = checkpoint::latest(&self.out_dir);
        if self.writes {
            let from = latest.as_ref().map_or(0, |(s, _)| *s);
            crate::run::divergence::check_divergence(&self.out_dir, from, &self.recipe_toml)?;
        }
        let Some((from, dir)) = latest else {
            return Ok(None);
        };
        super::resume_checks::check_same_data(&dir, &self.recipe_toml)?;
        let (state, opt_state) = checkpoint::load(&dir, params)?;
        checkpoint::verify_base(&dir, &state, &session.tree)?;
        past_steps(&dir, state.step, spec.train.steps, &spec.run.name)?;
        opt.load_state(state.optimizer_step, opt_state)
            .map_err(|e| Error::Config(format!("checkpoint {}: {e}", dir.display())))?;
        same_world(&dir, state.world_size, size)?;
        checkpoint::set_cpu_rng_hex(rank_rng(&dir, &state, rank)?)?;
        self.best = state.best;
        Ok(Some(Resumed {
            from,
            dir,
            step: state.step,
            cursor: state.cursor,
            metrics: state.metrics,
        }))
    }

    /// Appends this invocation's environment to `environment.jsonl` (rank 0); `world` is the
    /// world size and the gradient group's backend.
    pub fn record_environment(
        &self,
        step: u64,
        device: &str,
        world: (usize, &'static str),
    ) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        crate::run::environment::record_environment(&self.out_dir, step, device, world)
    }

    /// Whether `metrics` (of `step`) hold a new best value of `keep_best` (and records it).
    pub fn note_best(&mut self, metrics: &Map<String, Value>, step: u64) -> bool {
        let ck = &self.config;
        let Some(v) = ck
            .keep_best
            .as_ref()
            .and_then(|m| metrics.get(m))
            .and_then(|v| v.as_f64())
        else {
            return false;
        };
        let better = match self.best {
            None => true,
            Some((b, _)) if ck.maximize() => v > b,
            Some((b, _)) => v < b,
        };
        if better {
            self.best = Some((v, step));
        }
        better
    }

    /// Whether a checkpoint is due at `step` of `steps`: a new best, the last step, a stop, or
    /// `[checkpoint] every_steps`.
    pub fn due(&self, step: u64, steps: u64, stopping: bool, new_best: bool) -> bool {
        let every = self.config.every_steps;
        new_best || step == steps || stopping || every.is_some_and(|e| step.is_multiple_of(e))
    }

    /// Writes the checkpoint `state` with `params` and the optimizer state, prunes old ones
    /// (keeping the best), and returns its directory.
    pub fn save(
        &self,
        state: &TrainState,
        params: &[Parameter],
        optimizer_state: &BTreeMap<String, Tensor>,
    ) -> Result<PathBuf> {
        let out = &self.out_dir;
        let dir = checkpoint::save(out, state, params, optimizer_state, &self.recipe_toml)?;
        crate::run::prune(out, self.config.keep_last, self.best.map(|b| b.1))?;
        Ok(dir)
    }

    /// Marks the run diverged at `step` for `what` (rank 0), so that resuming it stops.
    pub fn record_divergence(&self, step: u64, what: &str) {
        if self.writes {
            crate::run::divergence::record_divergence(&self.out_dir, step, what, &self.recipe_toml);
        }
    }

    /// `; the last good checkpoint is ...` for a run that stops on a divergence (empty
    /// without one).
    pub fn last_good(&self) -> String {
        checkpoint::latest(&self.out_dir)
            .map(|(s, p)| format!("; the last good checkpoint is {} (step {s})", p.display()))
            .unwrap_or_default()
    }

    /// The newest checkpoint of the run directory (rank 0; `None` on the others).
    pub fn newest(&self) -> Option<PathBuf> {
        match self.writes {
            true => checkpoint::latest(&self.out_dir).map(|(_, p)| p),
            false => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpointer that writes nothing, keeping the best by `metric`.
    fn keeping(metric: &str, every_steps: Option<u64>) -> Checkpointer {
        Checkpointer {
            out_dir: PathBuf::from("/nonexistent"),
            config: CheckpointConfig {
                every_steps,
                keep_best: Some(metric.into()),
                ..CheckpointConfig::default()
            },
            recipe_toml: String::new(),
            writes: false,
            base: None,
            best: None,
            _lock: None,
        }
    }

    fn metrics(k: &str, v: f64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(k.into(), v.into());
        m
    }

    #[test]
    fn the_best_is_the_highest_accuracy_or_the_lowest_loss() {
        let mut c = keeping("eval.exact_match", None);
        assert!(c.note_best(&metrics("eval.exact_match", 0.5), 10));
        assert!(!c.note_best(&metrics("eval.exact_match", 0.4), 20));
        assert!(!c.note_best(&metrics("eval.loss", 0.1), 30));
        assert_eq!(c.best(), Some((0.5, 10)));
        let mut c = keeping("eval.loss", None);
        assert!(c.note_best(&metrics("eval.loss", 0.5), 10));
        assert!(c.note_best(&metrics("eval.loss", 0.4), 20));
        assert_eq!(c.best(), Some((0.4, 20)));
    }

    #[test]
    fn a_checkpoint_is_due_at_a_best_the_end_a_stop_or_every_n_steps() {
        let c = keeping("eval.loss", Some(250));
        assert!(c.due(500, 1500, false, false) && c.due(1500, 1500, false, false));
        assert!(c.due(7, 1500, true, false) && c.due(7, 1500, false, true));
        assert!(!c.due(7, 1500, false, false));
        assert!(!keeping("eval.loss", None).due(500, 1500, false, false));
        assert_eq!(c.newest(), None); // a rank that does not write has none
    }
}
