//! Training: the loop behind `pzt train` and the evaluation behind `pzt eval`, over a typed
//! [`RunSpec`] (this module never reads a recipe). Optimizers written over tensors (so that
//! their state is checkpointed), losses, tasks, checkpoints, metrics and TensorBoard events.
//!
//! The trainer is in parts. The step loop ([`Trainer`], `trainer.rs`) owns the session, the
//! optimizer, the step count and the data cursor: it takes the steps and drives the others.
//! The execution strategy (`execution.rs`) holds everything that differs between one process
//! and a rank of a data-parallel run (its slice of the batch, the gradient all-reduce, what the
//! ranks agree on; `world.rs` is the collectives). The checkpointer (`checkpointer.rs`) holds
//! the run directory: its lock, the best checkpoint, writing, pruning and resuming. The
//! observers (`observers.rs`: `metrics.jsonl`, TensorBoard, the printout of `report.rs`) are
//! told what happens, on rank 0 alone.
//!
//! Deterministic: parameters are initialized from (seed, init name); the data order is a pure
//! function of (seed, epoch); dropout streams are derived from (seed, step, micro-batch); the
//! learning rate from the step. With the same recipe, seed, machine and thread count, the
//! metrics (except wall-clock fields) and the final parameters are bit-identical, and a run
//! resumed from a checkpoint continues exactly as the uninterrupted run would have.
//!
//! ```no_run
//! use pzt::train::{train, TrainOptions};
//! use std::sync::{atomic::AtomicBool, Arc};
//! # fn main() -> pzt::Result<()> {
//! let registry = pzt::builtin_registry();
//! let recipe = pzt::recipe::Recipe::load(std::path::Path::new("recipes/quickstart.toml"), &[])?;
//! let spec = recipe.train_spec(&registry)?;
//! let stop = Arc::new(AtomicBool::new(false)); // set it to stop after the current step
//! let summary = train(spec, &TrainOptions::default(), &stop).map_err(|e| recipe.locate(e))?;
//! println!("{}", summary.to_json());
//! let dir = pzt::train::checkpoint_to_eval(&recipe.run.out_dir, None)?;
//! let metrics = pzt::train::eval(recipe.eval_spec(&registry)?, &dir)?;
//! # let _ = metrics;
//! # Ok(()) }
//! ```

mod agreement;
mod checkpointer;
mod execution;
pub mod expect;
pub mod head;
pub mod losses;
mod observers;
pub mod optim;
mod precompute;
pub mod preference;
mod profiling;
mod reference;
mod report;
pub mod resume_checks;
mod session;
pub mod task;
mod trainer;
pub mod world;

pub use session::{pick_device, Session};
pub use trainer::Trainer;

use crate::base::{Error, Result};
use crate::run::checkpoint;
use crate::spec::RunSpec;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// How `pzt train` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Show a progress bar (on a terminal) instead of plain log lines.
    pub progress: bool,
    /// Print nothing while training (for `--json`).
    pub quiet: bool,
    /// Profile some steps with libtorch's operator profiler (`pzt train --profile`).
    pub profile: Option<ProfileOptions>,
}

/// Which steps to profile and where the trace goes: the `steps` steps after the first one this
/// invocation runs (the first warms up), as a Chrome trace written to `trace`.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    pub trace: PathBuf,
    pub steps: u64,
}

/// A request to stop after the current step (the command line sets it on Ctrl-C or SIGTERM).
pub type StopSignal = Arc<AtomicBool>;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub out_dir: PathBuf,
    pub device: String,
    pub steps: u64,
    pub total_steps: u64,
    pub resumed_from: Option<u64>,
    pub final_loss: Option<f64>,
    pub eval: Map<String, Value>,
    pub checkpoint: Option<PathBuf>,
    pub elapsed_s: f64,
    pub interrupted: bool,
    /// The operator tables of the profiled steps (`--profile`), markdown.
    pub profile: Option<String>,
    /// This process's rank in a data-parallel run (0 when alone), and the world size.
    pub rank: usize,
    pub world_size: usize,
}

impl Summary {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "out_dir": self.out_dir.display().to_string(),
            "device": self.device,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "resumed_from": self.resumed_from,
            "final_loss": self.final_loss,
            "eval": self.eval,
            "checkpoint": self.checkpoint.as_ref().map(|p| p.display().to_string()),
            "elapsed_s": self.elapsed_s,
            "interrupted": self.interrupted,
            "world_size": self.world_size,
        })
    }
}

/// Runs (or resumes, from the newest checkpoint of the run directory) training until
/// `[train] steps`, or until `stop` is set.
///
/// When the environment says this process is one rank of a data-parallel run (`RANK`,
/// `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, as torchrun and `pzt train
/// --nproc` set them), it joins the others first.
pub fn train(spec: RunSpec, opts: &TrainOptions, stop: &StopSignal) -> Result<Summary> {
    let world = match world::Launch::from_env()? {
        None => world::World::single(),
        Some(l) => {
            let device = session::rank_device(&spec.train.device, l.local_rank)?;
            let timeout = std::time::Duration::from_secs(spec.train.distributed_timeout_s);
            world::World::join(&l, spec.train.distributed_backend, device, timeout)?
        }
    };
    Trainer::new(spec, opts, world)?.run(stop)
}

/// The checkpoint `pzt eval` evaluates: `given`, or the newest of the run directory.
pub fn checkpoint_to_eval(out_dir: &Path, given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => checkpoint::latest(out_dir).map(|(_, p)| p).ok_or_else(|| {
            Error::Config(format!(
                "no checkpoint in {} (train first, or evaluate the model as the recipe builds it with `pzt eval --no-checkpoint`)",
                checkpoint::dir_of(out_dir).display()
            ))
        })?,
    };
    if !dir.join("state.json").is_file() {
        return Err(Error::Config(format!(
            "{} is not a checkpoint (no state.json)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Evaluates the model as the spec builds it (no run checkpoint) on the eval split.
pub fn eval_as_built(spec: RunSpec) -> Result<Map<String, Value>> {
    Session::new(spec)?.evaluate()
}

/// Evaluates the checkpoint `dir` on the eval split.
pub fn eval(spec: RunSpec, dir: &Path) -> Result<Map<String, Value>> {
    let session = Session::new(spec)?;
    checkpoint::load_model(dir, &session.tree)?;
    session.evaluate()
}
