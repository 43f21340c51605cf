//! Data-parallel training over c10d: several processes (and threads) per test.
#[path = "../common/mod.rs"]
mod common;

mod c10d;
mod data_parallel;
mod failures;
