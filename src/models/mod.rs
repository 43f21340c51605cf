//! Model builders that expand into ordinary trees of combinators.

pub mod mlp;
pub mod transformer;
