//! The model tree: one structure for forward, selection, surgery, display, serialization and
//! checkpoint names.
//!
//! A [`Node`] is a layer implementation ([`Layer`]: a kind name, static config, forward logic)
//! plus named children, named parameter entries and named state entries. Combinators are
//! layers whose forward calls their children; primitives use their parameters. Nodes are cheap
//! to clone and clones share parameters, so edits made through [`select()`] return new trees that
//! share parameters with the old one.
//!
//! Paths name nodes by their child names from the root, joined with dots:
//! `blocks.3.attention.input_to_query`.

mod build;
mod display;
mod layer;
mod pathset;
pub mod registry;
pub mod select;
pub mod selector;
mod serialize;
mod state;
mod trace;

pub use crate::named::{SideInputs, SideValue, Value};
pub use build::{Builder, Scope};
pub use layer::{ChildLayout, Layer, ParamSpec};
pub use registry::Registry;
pub use select::{select, Selection};
pub use serialize::{model_toml, Form};
pub use trace::{trace_leaf_outputs, trace_record, trace_segment, RECOMPUTE_PEAK};

use crate::base::{Error, Result};
use crate::params::{ParamEntry, Parameter, StateEntry};
use std::sync::Arc;
use tch::Tensor;

/// A node of the model tree.
#[derive(Clone)]
pub struct Node {
    layer: Arc<dyn Layer>,
    children: Vec<(String, Node)>,
    params: Vec<(String, ParamEntry)>,
    states: Vec<(String, StateEntry)>,
    /// Child positions by name, built on first lookup in a wide node (so that selecting among
    /// tens of thousands of children stays linear); reset whenever the children change.
    index: ChildIndex,
}

type ChildIndex = Arc<std::sync::OnceLock<std::collections::HashMap<String, usize>>>;

/// Below this many children a lookup scans them.
const INDEXED_WIDTH: usize = 32;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.render(usize::MAX))
    }
}

impl Node {
    /// A node holding `layer`, with no children, parameters or state yet.
    pub fn new(layer: impl Layer + 'static) -> Node {
        Node {
            layer: Arc::new(layer),
            children: vec![],
            params: vec![],
            states: vec![],
            index: ChildIndex::default(),
        }
    }

    /// Builds a node for `layer`, creating the parameters and state variables it declares
    /// ([`Layer::param_specs`], [`Layer::state_specs`]) under `scope` (labels
    /// `<scope>.<name>`).
    pub fn build(layer: impl Layer + 'static, scope: &Scope<'_>) -> Result<Node> {
        Self::build_arc(Arc::new(layer), scope, &Default::default())
    }

    /// Like [`build`](Self::build) for a shared layer, with optional label overrides per
    /// parameter name (a parameter whose label already exists in the builder is shared).
    pub fn build_arc(
        layer: Arc<dyn Layer>,
        scope: &Scope<'_>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Node> {
        layer.check()?;
        let mut node = Node::from_arc(layer.clone());
        for spec in layer.param_specs() {
            let entry = match labels.get(&spec.name) {
                Some(label) => scope.param_labelled(label, &spec.shape, spec.init, spec.fan_in)?,
                None => scope.param(&spec.name, &spec.shape, spec.init, spec.fan_in)?,
            };
            node = node.with_param(spec.name.clone(), entry);
        }
        for name in layer.state_specs() {
            let var = crate::params::StateVariable::new(scope.label(&name), None);
            node = node.with_state(name, StateEntry::Var(var));
        }
        Ok(node)
    }

    /// A node from a shared layer implementation.
    pub fn from_arc(layer: Arc<dyn Layer>) -> Node {
        Node {
            layer,
            children: vec![],
            params: vec![],
            states: vec![],
            index: ChildIndex::default(),
        }
    }

    /// The position of the child `name`.
    fn child_position(&self, name: &str) -> Option<usize> {
        if self.children.len() < INDEXED_WIDTH {
            return self.children.iter().position(|(n, _)| n == name);
        }
        let index = self.index.get_or_init(|| {
            let mut m = std::collections::HashMap::with_capacity(self.children.len());
            for (i, (n, _)) in self.children.iter().enumerate() {
                m.entry(n.clone()).or_insert(i);
            }
            m
        });
        index.get(name).copied()
    }

    /// Adds (or replaces) a child.
    pub fn with_child(mut self, name: impl Into<String>, child: Node) -> Node {
        let name = name.into();
        match self.child_position(&name) {
            Some(i) => self.children[i].1 = child,
            None => {
                self.children.push((name, child));
                self.index = ChildIndex::default();
            }
        }
        self
    }

    /// Adds (or replaces) a parameter entry.
    pub fn with_param(mut self, name: impl Into<String>, p: ParamEntry) -> Node {
        let name = name.into();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = p,
            None => self.params.push((name, p)),
        }
        self
    }

    /// Adds (or replaces) a state entry.
    pub fn with_state(mut self, name: impl Into<String>, s: StateEntry) -> Node {
        let name = name.into();
        match self.states.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = s,
            None => self.states.push((name, s)),
        }
        self
    }

    /// Replaces all children.
    pub fn with_children(mut self, children: Vec<(String, Node)>) -> Node {
        self.children = children;
        self.index = ChildIndex::default();
        self
    }

    /// The kind name.
    pub fn kind(&self) -> &str {
        self.layer.kind()
    }

    /// Whether the children form an ordered sequence that `insert_before`, `insert_after` and
    /// `remove_from_parent` may edit (Sequential and its relatives, the branch combinators).
    pub fn is_sequence(&self) -> bool {
        matches!(self.layer.child_layout(), ChildLayout::Sequence { .. })
    }

    /// The layer implementation.
    pub fn layer(&self) -> &Arc<dyn Layer> {
        &self.layer
    }

    /// The layer implementation as a concrete type, when it is one.
    pub fn layer_as<T: Layer>(&self) -> Option<&T> {
        self.layer.as_any().downcast_ref::<T>()
    }

    /// The children, in order.
    pub fn children(&self) -> &[(String, Node)] {
        &self.children
    }

    /// The parameter entries of this node (not of its children).
    pub fn param_entries(&self) -> &[(String, ParamEntry)] {
        &self.params
    }

    /// The state entries of this node (not of its children).
    pub fn state_entries(&self) -> &[(String, StateEntry)] {
        &self.states
    }

    /// A child by name.
    pub fn child(&self, name: &str) -> Result<&Node> {
        match self.child_position(name).map(|i| &self.children[i]) {
            Some((_, c)) => Ok(c),
            None => Err(Error::Config(format!(
                "{} has no child `{name}` (children: {})",
                self.kind(),
                self.children
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A parameter's current value.
    pub fn param(&self, name: &str) -> Result<Tensor> {
        self.param_entry(name)?.value()
    }

    /// A parameter entry by name.
    pub fn param_entry(&self, name: &str) -> Result<&ParamEntry> {
        match self.params.iter().find(|(n, _)| n == name) {
            Some((_, p)) => Ok(p),
            None => Err(Error::Param(format!(
                "{} has no parameter `{name}`",
                self.kind()
            ))),
        }
    }

    /// A state entry by name.
    pub fn state(&self, name: &str) -> Result<&StateEntry> {
        match self.states.iter().find(|(n, _)| n == name) {
            Some((_, s)) => Ok(s),
            None => Err(Error::Param(format!(
                "{} has no state `{name}`",
                self.kind()
            ))),
        }
    }

    /// Runs the layer.
    pub fn forward(&self, x: impl Into<Value>, side: &SideInputs) -> Result<Value> {
        let out = self.layer.forward(self, x.into(), side)?;
        if self.children.is_empty() {
            if let Value::Tensor(nt) = &out {
                trace_record(self.kind(), nt.tensor().numel() as i64, nt.kind());
            }
        }
        Ok(out)
    }

    /// Runs a child, adding its name to the path of any error.
    pub fn call_child(&self, name: &str, x: Value, side: &SideInputs) -> Result<Value> {
        let child = self.child(name)?;
        child.forward(x, side).map_err(|e| e.in_child(name))
    }

    /// The node at a path (a sequence of child names; empty = this node).
    pub fn get(&self, path: &[String]) -> Result<&Node> {
        let mut cur = self;
        for (i, seg) in path.iter().enumerate() {
            cur = match cur.child_position(seg).map(|i| &cur.children[i]) {
                Some((_, c)) => c,
                None => {
                    return Err(Error::Select(format!(
                        "no node at `{}`: `{}` has no child `{seg}`",
                        path.join("."),
                        if i == 0 {
                            "<root>".to_string()
                        } else {
                            path[..i].join(".")
                        }
                    )))
                }
            }
        }
        Ok(cur)
    }

    /// Visits every node in pre-order with its path.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&[String], &'a Node)) {
        fn go<'a>(n: &'a Node, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &'a Node)) {
            f(path, n);
            for (name, c) in &n.children {
                path.push(name.clone());
                go(c, path, f);
                path.pop();
            }
        }
        go(self, &mut vec![], f)
    }

    /// Every parameter entry with the path of the node holding it (a shared parameter appears
    /// once per place).
    pub fn all_param_entries(&self) -> Vec<(String, String, ParamEntry)> {
        let mut out = vec![];
        self.walk(&mut |path, n| {
            for (name, p) in &n.params {
                out.push((path.join("."), name.clone(), p.clone()));
            }
        });
        out
    }

    /// A copy of the tree whose parameter entries `f` gives (the layers, structure and state
    /// shared): each distinct label is given once, so parameters shared between places stay
    /// shared in the copy.
    pub fn map_params(&self, f: &mut dyn FnMut(&ParamEntry) -> Result<ParamEntry>) -> Result<Node> {
        fn go(
            n: &Node,
            f: &mut dyn FnMut(&ParamEntry) -> Result<ParamEntry>,
            seen: &mut std::collections::HashMap<String, ParamEntry>,
        ) -> Result<Node> {
            let mut out = n.clone();
            for (_, p) in out.params.iter_mut() {
                let new = match seen.get(p.label()) {
                    Some(e) => e.clone(),
                    None => {
                        let e = f(p)?;
                        seen.insert(p.label().to_string(), e.clone());
                        e
                    }
                };
                *p = new;
            }
            for (_, c) in out.children.iter_mut() {
                *c = go(c, f, seen)?;
            }
            Ok(out)
        }
        go(self, f, &mut Default::default())
    }

    /// The distinct live parameters, in first-seen order (shared ones once).
    pub fn parameters(&self) -> Vec<Parameter> {
        let mut out: Vec<Parameter> = vec![];
        for (_, _, e) in self.all_param_entries() {
            if let ParamEntry::Bound(p) = e {
                if !out.iter().any(|q| q.same(&p)) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The distinct trainable parameters.
    pub fn trainable_parameters(&self) -> Vec<Parameter> {
        self.parameters()
            .into_iter()
            .filter(|p| p.trainable())
            .collect()
    }

    /// Total number of elements over distinct parameter labels (slots and frozen included).
    pub fn num_params(&self) -> i64 {
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for (_, _, e) in self.all_param_entries() {
            if seen.insert(e.label().to_string()) {
                total += e.shape().iter().product::<i64>();
            }
        }
        total
    }

    /// Rebuilds the tree bottom-up, letting `f` replace each node's parameter and state
    /// entries (used by unbind, bind, freeze).
    pub(crate) fn map_entries(
        &self,
        f: &mut dyn FnMut(&ParamEntry) -> Result<ParamEntry>,
        g: &mut dyn FnMut(&StateEntry) -> Result<StateEntry>,
    ) -> Result<Node> {
        let mut children = Vec::with_capacity(self.children.len());
        for (n, c) in &self.children {
            children.push((n.clone(), c.map_entries(f, g)?));
        }
        let mut params = Vec::with_capacity(self.params.len());
        for (n, p) in &self.params {
            params.push((n.clone(), f(p)?));
        }
        let mut states = Vec::with_capacity(self.states.len());
        for (n, s) in &self.states {
            states.push((n.clone(), g(s)?));
        }
        Ok(Node {
            layer: self.layer.clone(),
            children,
            params,
            states,
            index: ChildIndex::default(),
        })
    }

    /// Whether two trees have the same structure: kinds, configs, child names, parameter names,
    /// labels and shapes (values are not compared).
    pub fn same_structure(&self, other: &Node) -> bool {
        if self.kind() != other.kind()
            || self.layer.config().ok() != other.layer.config().ok()
            || self.children.len() != other.children.len()
            || self.params.len() != other.params.len()
        {
            return false;
        }
        let params_eq = self
            .params
            .iter()
            .zip(&other.params)
            .all(|((a, pa), (b, pb))| {
                a == b && pa.label() == pb.label() && pa.shape() == pb.shape()
            });
        params_eq
            && self
                .children
                .iter()
                .zip(&other.children)
                .all(|((a, ca), (b, cb))| a == b && ca.same_structure(cb))
    }
}
