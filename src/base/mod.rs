//! The base of the crate, used by every other module: the error type, dtype names, seeds and
//! hashing, bounded reads, atomic files and directories. Nothing here knows about tensors with names, layers or recipes.

pub mod atomic_dir;
pub mod defaults;
pub mod dtype;
pub mod error;
pub mod files;
pub mod interrupt;
pub mod memory;
pub mod outputs;
pub mod seed;
pub mod text;

pub use error::{Error, Result, TorchContext};
