//! Models: builders that expand into ordinary trees of layers (the `mlp` builder, one
//! llama-like decoder builder shared by the native `transformer` builder and every Hugging Face
//! family), Hugging Face import and export, and generation.

pub mod decoder;
pub mod generate;
pub mod hf;
pub mod mlp;
pub mod token_head;
pub mod transformer;

use crate::tree::registry::decode_config;
use crate::tree::{Registry, Scope};
use std::sync::Arc;

/// Registers the builders a recipe can name with `builder = "..."`: `mlp` and `transformer`.
pub fn register_builders(reg: &mut Registry) {
    reg.register_builder(
        "mlp",
        Arc::new(|cfg: &toml::Table, scope: &Scope<'_>| {
            decode_config::<mlp::MlpConfig>("the `mlp` builder", cfg)?.build(scope)
        }),
    );
    reg.register_builder(
        "transformer",
        Arc::new(|cfg: &toml::Table, scope: &Scope<'_>| {
            decode_config::<transformer::TransformerConfig>("the `transformer` builder", cfg)?
                .build(scope)
        }),
    );
}
