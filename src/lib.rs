//! # pzt
//!
//! Penzai's ideas on libtorch: tensors with named axes ([`named::NamedTensor`]), models as
//! trees of small combinator layers ([`tree::Node`]), parameters and state variables that can
//! be unbound, frozen and rebound ([`params`]), and selectors that patch a model
//! ([`tree::select`]).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod error;

pub use error::{Error, Result};
