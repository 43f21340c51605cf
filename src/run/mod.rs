//! The run directory (`[run] out_dir`): everything `pzt train` writes there and every command
//! reads back, in one place.
//!
//! ```text
//! <out_dir>/
//!   .lock                      held by the `pzt train` writing the run (lock)
//!   checkpoints/step-<N>/      model, optimizer, state.json, recipe.toml, manifest.json (checkpoint)
//!   checkpoints/.pins/         runs started from one of these checkpoints (pins)
//!   metrics.jsonl              one line per logged step (metrics)
//!   events.out.tfevents.*      the same scalars for TensorBoard (tensorboard)
//!   environment.jsonl          one line per start of the run (environment)
//! ```
//!
//! [`policy`] is `[checkpoint]` (when checkpoints are written, which are kept); [`listing`] reads
//! a run back without loading a model (`pzt runs`, `pzt report`).

pub mod checkpoint;
pub mod divergence;
pub mod environment;
pub mod listing;
pub mod lock;
pub mod metrics;
pub mod model_path;
mod pins;
pub mod policy;
pub mod tensorboard;

pub use pins::{pin, pinned_steps, prune};
pub use policy::{CheckpointConfig, EVAL_METRICS};
