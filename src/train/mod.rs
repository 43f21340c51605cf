//! Training: the `[train]`, `[optim]` and `[checkpoint]` sections, optimizers written over
//! tensors (so that their state is checkpointed), losses, checkpoints, metrics and the loop.

pub mod checkpoint;
pub mod config;
pub mod losses;
pub mod metrics;
pub mod optim;
pub mod tensorboard;
pub mod trainer;
