//! Grouping layers (combinators): layers whose only job is to route values through their
//! children.
//!
//! - `Sequential` (and its named relatives `Affine`, `LayerNorm`, `RMSLayerNorm`): children in
//!   order, each output feeding the next.
//! - `NamedGroup`: a `Sequential` with a name, for readability of the tree.
//! - `Residual`: `x + delta(x)` (child `delta`).
//! - `BranchAndAddTogether` / `BranchAndMultiplyTogether`: every child sees `x`; their outputs
//!   are summed / multiplied (by name).
//!
//! Side inputs pass through unchanged to every child.

use crate::base::{Error, Result};
use crate::tree::registry::Factory;
use crate::tree::{ChildLayout, Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kinds implemented by [`Sequential`].
pub const SEQUENCE_KINDS: [&str; 4] = ["Sequential", "Affine", "LayerNorm", "RMSLayerNorm"];

/// Runs its children in order. The kind name is `Sequential` or one of its named relatives.
#[derive(Debug, Clone)]
pub struct Sequential {
    kind: String,
}

impl Sequential {
    /// A `Sequential` with children named `0`, `1`, ... (returns the node, like Penzai's
    /// `Sequential([...])`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(children: Vec<Node>) -> Node {
        Self::named(
            children
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
        )
    }
    /// A `Sequential` with named children (in order).
    pub fn named(children: Vec<(String, Node)>) -> Node {
        Self::of_kind("Sequential", children)
    }
    /// A sequence with another kind name (`Affine`, `LayerNorm`, ...).
    pub fn of_kind(kind: &str, children: Vec<(String, Node)>) -> Node {
        Node::new(Sequential {
            kind: kind.to_string(),
        })
        .with_children(children)
    }
}

pub fn sequence_factory(kind: &str) -> Factory {
    let kind = kind.to_string();
    Arc::new(move |cfg: &toml::Table| {
        if let Some(k) = cfg.keys().next() {
            return Err(Error::Config(format!(
                "{kind} takes no config keys, got `{k}`"
            )));
        }
        Ok(Arc::new(Sequential { kind: kind.clone() }) as Arc<dyn Layer>)
    })
}

fn run_in_order(node: &Node, mut x: Value, side: &SideInputs) -> Result<Value> {
    for (name, child) in node.children() {
        x = child.forward(x, side).map_err(|e| e.in_child(name))?;
    }
    Ok(x)
}

impl Layer for Sequential {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn config(&self) -> Result<toml::Table> {
        Ok(toml::Table::new())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Sequence { min: 0 }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        run_in_order(node, x, side)
    }
}

/// A named sequence of layers (Penzai's `NamedGroup`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedGroup {
    pub name: String,
}

impl NamedGroup {
    /// A group with children `0`, `1`, ...
    pub fn build(name: &str, children: Vec<Node>) -> Node {
        Node::new(NamedGroup { name: name.into() }).with_children(
            children
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
        )
    }
}

impl Layer for NamedGroup {
    crate::layer_common!("NamedGroup");
    fn summary(&self) -> String {
        self.name.clone()
    }
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Sequence { min: 0 }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        run_in_order(node, x, side)
    }
}

/// `x + delta(x)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Residual {}

impl Residual {
    /// A residual around `delta`.
    pub fn build(delta: Node) -> Node {
        Node::new(Residual {}).with_child("delta", delta)
    }
}

impl Layer for Residual {
    crate::layer_common!("Residual");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["delta"],
            wrap: Some("delta"),
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let d = node.call_child("delta", x.clone(), side)?.into_tensor()?;
        let x = x.into_tensor()?;
        Ok(x.add(&d)
            .map_err(|e| Error::Axis(format!("Residual: input and delta do not add: {e}")))?
            .into())
    }
}

fn branches(
    node: &Node,
    x: &Value,
    side: &SideInputs,
    kind: &str,
) -> Result<Vec<crate::named::NamedTensor>> {
    if node.children().is_empty() {
        return Err(Error::Config(format!("{kind} has no branches")));
    }
    node.children()
        .iter()
        .map(|(name, c)| {
            c.forward(x.clone(), side)
                .and_then(|v| v.into_tensor())
                .map_err(|e| e.in_child(name))
        })
        .collect()
}

/// Sum of its children's outputs on the same input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchAndAddTogether {}

impl BranchAndAddTogether {
    /// Branches `0`, `1`, ...
    pub fn build(children: Vec<Node>) -> Node {
        Node::new(BranchAndAddTogether {}).with_children(
            children
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
        )
    }
}

impl Layer for BranchAndAddTogether {
    crate::layer_common!("BranchAndAddTogether");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Sequence { min: 1 }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let outs = branches(node, &x, side, "BranchAndAddTogether")?;
        let mut acc = outs[0].clone();
        for o in &outs[1..] {
            acc = acc.add(o)?;
        }
        Ok(acc.into())
    }
}

/// Product of its children's outputs on the same input (gated MLPs: SwiGLU, GeGLU).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchAndMultiplyTogether {}

impl BranchAndMultiplyTogether {
    /// Branches `0`, `1`, ...
    pub fn build(children: Vec<Node>) -> Node {
        Node::new(BranchAndMultiplyTogether {}).with_children(
            children
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
        )
    }
}

impl Layer for BranchAndMultiplyTogether {
    crate::layer_common!("BranchAndMultiplyTogether");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Sequence { min: 1 }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let outs = branches(node, &x, side, "BranchAndMultiplyTogether")?;
        let mut acc = outs[0].clone();
        for o in &outs[1..] {
            acc = acc.mul(o)?;
        }
        Ok(acc.into())
    }
}
