//! Model builders that expand into ordinary trees of combinators.

pub mod hf;
pub mod hf_config;
pub mod mlp;
pub mod transformer;
