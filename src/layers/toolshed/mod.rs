//! Penzai's toolshed in Rust: rewrites of a model tree through a selection.
//!
//! - [`lora`]: `LowRankAdapter` (LoRA and DoRA) and [`lora::loraify`], which replaces each
//!   selected `Linear` by an adapter around it; [`lora::merge_adapters`] folds them back.
//! - [`mod@freeze`]: [`freeze::freeze`] and [`freeze::train_only`] turn off training (no
//!   gradient, no optimizer state) for the parameters under a selection, or outside it.
//! - [`checkpointed`]: `Checkpointed` and [`checkpointed::checkpoint_activations`], which
//!   recompute a subtree's activations in the backward pass.
//! - [`knockout`]: `KnockOutAttentionHeads`, which zeroes chosen heads' attention weights.
//! - [`linearize`]: `LinearizeAndAdjust`, a layer replaced by its first-order expansion
//!   around a point (Penzai's `model_rewiring`).
//! - [`save`]: [`save::saving_intermediates`] and [`save::saving_all_intermediates`], which
//!   keep the outputs of selected subtrees in state variables (Penzai's `save_intermediates`).

pub mod checkpointed;
pub mod freeze;
pub mod knockout;
pub mod linearize;
pub mod lora;
pub mod quantize;
pub mod save;

pub use checkpointed::{checkpoint_activations, without_checkpointing, Checkpointed};
pub use freeze::{freeze, train_only};
pub use knockout::KnockOutAttentionHeads;
pub use linearize::LinearizeAndAdjust;
pub use lora::{
    adapter_labels, linears_within, loraify, merge_adapters, LoraConfig, LowRankAdapter,
};
pub use save::{saved_values, saving_all_intermediates, saving_intermediates, Saved};
