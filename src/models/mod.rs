//! Model builders that expand into ordinary trees of combinators.

pub mod generate;
pub mod hf;
pub mod hf_config;
pub mod load;
pub mod mlp;
pub mod transformer;
