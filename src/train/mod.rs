//! Training pieces: optimizers written over tensors (so that their state can be saved) and
//! losses.

pub mod losses;
pub mod optim;
