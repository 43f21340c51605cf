//! Tests that change process-wide libtorch state (deterministic switches, SDPA backends,
//! the global RNG, the thread count), kept apart from the other tests' processes.
#[path = "../common/mod.rs"]
mod common;

mod backend;
mod fuzz_corpus;
