//! # pzt
//!
//! Penzai's ideas on libtorch: tensors with named axes ([`named::NamedTensor`]), models as
//! trees of small combinator layers ([`tree::Node`], [`layers`]), parameters
//! and state variables that can be unbound, frozen and rebound ([`params`]), and selectors that
//! patch a model ([`tree::select()`]).
//!
//! ```no_run
//! use pzt::prelude::*;
//! # fn main() -> pzt::Result<()> {
//! let b = Builder::new(0);
//! let model = pzt::models::mlp::mlp(&b.scope("mlp"), "features", "hidden", &[2, 8, 1], Activation::Tanh)?;
//! let x = NamedTensor::wrap(tch::Tensor::zeros([4, 2], (tch::Kind::Float, tch::Device::Cpu)), &["batch", "features"])?;
//! let y = model.forward(x, &SideInputs::new())?.into_tensor()?;
//! assert_eq!(y.named_shape(), vec![("batch".to_string(), 4), ("features".to_string(), 1)]);
//! // Swap every activation for ReLU; parameters stay shared with `model`.
//! let relu = Node::new(Elementwise { function: Activation::Relu });
//! let edited = select(&model).at_instances_of("Elementwise").set(&relu)?;
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod assembly;
pub mod backend;
pub mod base;
pub mod data;
pub mod demo;
pub mod layers;
pub mod loader;
pub mod models;
pub mod named;
pub mod params;
pub mod probe;
pub mod recipe;
pub mod run;
pub mod spec;
pub mod train;
pub mod tree;
pub mod viz;

pub use base::error::{Error, Result};

/// The registry of every built-in layer kind and builder: what the `pzt` command line reads
/// recipes and TOML trees with. Register custom kinds into it
/// ([`tree::Registry::register_layer`]).
pub fn builtin_registry() -> tree::Registry {
    let mut reg = tree::Registry::new();
    layers::register_builtins(&mut reg);
    models::register_builders(&mut reg);
    reg
}
/// Re-exported for layer configs ([`tree::Layer::config`]).
pub use toml;

/// The names most programs need.
pub mod prelude {
    pub use crate::layers::attention::{Attention, AttentionMask, SelfAttentionConfig};
    pub use crate::layers::grouping::{
        BranchAndAddTogether, BranchAndMultiplyTogether, NamedGroup, Residual, Sequential,
    };
    pub use crate::layers::misc::{Activation, Elementwise};
    pub use crate::layers::Axes;
    pub use crate::named::NamedTensor;
    pub use crate::params::{ParamEntry, Parameter, RandomStream, StateEntry, StateVariable};
    pub use crate::tree::{
        select, Builder, ChildLayout, Layer, Node, Registry, Scope, Selection, SideInputs,
        SideValue, Value,
    };
    pub use crate::{Error, Result};
}
