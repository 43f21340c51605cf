//! The layer trait: what a node of a given kind computes, and the facts about its kind that
//! recipes, patches and serialization need (which children it takes, which parameters and
//! state it declares). A new layer kind is one type implementing [`Layer`] plus one
//! registration in a [`super::Registry`].

use super::{Node, SideInputs, Value};
use crate::base::Result;
use crate::params::init::Initializer;
use std::any::Any;

/// Which children a layer kind takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildLayout {
    /// None: a leaf (the default).
    Leaf,
    /// An ordered sequence (`layers = [...]` in a recipe, children `0`, `1`, ... or named), at
    /// least `min` of them. `insert_before`, `insert_after` and `remove_from_parent` edit it,
    /// and a `wrap` patch puts the wrapped subtree first.
    Sequence { min: usize },
    /// Fixed named slots, all required (`delta` for `Residual`). A `wrap` patch puts the
    /// wrapped subtree in the slot `wrap`, when there is one.
    Slots {
        names: &'static [&'static str],
        wrap: Option<&'static str>,
    },
    /// Any named children (`children = { name = {...} }` in a recipe).
    Named,
}

/// A layer implementation: what a node of a given kind computes. Implement it (and register a
/// factory in a [`super::Registry`]) to add a custom layer kind.
pub trait Layer: Send + Sync + std::fmt::Debug + Any {
    /// The kind name shown by `pzt show` and matched by selectors (`Linear`, `Attention`, ...).
    fn kind(&self) -> &str;
    /// The static configuration (everything but children, parameters and state), as TOML.
    fn config(&self) -> Result<toml::Table>;
    /// The forward pass. `node` is the node this layer sits in: read children, parameters and
    /// state through it.
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value>;
    /// A one-line summary for display (axes, sizes).
    fn summary(&self) -> String {
        String::new()
    }
    /// Which children this kind takes (default: none).
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Leaf
    }
    /// The parameters this layer needs, derived from its config (used by [`Node::build`] and
    /// by recipes to create them under path-derived labels).
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![]
    }
    /// The axis names of parameter `name`'s dimensions, in order (empty when unknown): what
    /// the HTML viewer labels a parameter's rows and columns with.
    fn param_axes(&self, _name: &str) -> Vec<String> {
        vec![]
    }
    /// The names of the state variables this layer needs.
    fn state_specs(&self) -> Vec<String> {
        vec![]
    }
    /// Checks the config's values (ranges, axes that must differ): called when a recipe's
    /// config is decoded and when a node is built, so that a bad value is refused up front
    /// rather than poisoning a run.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// For downcasting.
    fn as_any(&self) -> &dyn Any;
}

/// A parameter a layer needs: its field name, shape, initializer and fan-in.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Initializer,
    pub fan_in: i64,
}
