//! The planner: recipe -> model tree (+ patches) -> shape inference on the meta device ->
//! parameter counts and a training-memory estimate.
//!
//! Planning with [`Builder::slots`] allocates no parameter storage at all: parameters are
//! slots (shapes only), and shape inference binds them to meta tensors (libtorch's shape-only
//! device) and runs the real forward pass on a meta input of the declared `[model.input]`, so
//! an axis-name or size mismatch anywhere is reported with the layer path before anything
//! trains.
//!
//! Memory estimate for training: parameters (their dtype), gradients (one per trainable
//! parameter element, parameter dtype), optimizer state (what `[optim]` keeps per trainable
//! element: two moments for AdamW, the default; one buffer for SGD with momentum; none for
//! plain SGD), and activations: the sum of the outputs of every leaf layer for the model input
//! (what autograd keeps for the backward pass, roughly); a `Checkpointed` subtree counts only
//! its input, plus the largest such subtree's own activations (recomputed one at a time).

use super::model::ModelBuilder;
use super::patch::apply_patches;
use super::source::Diagnostic;
use super::{recipe_error, Recipe};
use crate::backend::meta_empty;
use crate::base::dtype::elem_size;
use crate::base::{Error, Result};
use crate::named::NamedTensor;
use crate::params::{FrozenParameter, ParamEntry};
use crate::spec::InputSpec;
use crate::tree::{trace_leaf_outputs, Builder, Node, Registry, SideInputs, RECOMPUTE_PEAK};
use std::collections::BTreeSet;

/// Parameter counts over distinct labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: i64,
    pub trainable: i64,
    pub frozen: i64,
}

/// A training-memory estimate in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub parameters: i64,
    pub gradients: i64,
    pub optimizer: i64,
    pub activations: i64,
}

impl Memory {
    /// The sum.
    pub fn total(&self) -> i64 {
        self.parameters + self.gradients + self.optimizer + self.activations
    }
}

/// A planned recipe.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    pub tree: Node,
    /// Output named shape and dtype from shape inference (None without `[model.input]`).
    pub output: Option<(Vec<(String, i64)>, tch::Kind)>,
    pub counts: Counts,
    pub memory: Memory,
    /// The processes of the data-parallel run the plan is for (1: one process).
    pub world_size: usize,
}

/// Counts distinct labels: trainable (live or slots that will train) and frozen.
pub fn count_params(tree: &Node) -> Counts {
    let mut seen = BTreeSet::new();
    let mut c = Counts {
        total: 0,
        trainable: 0,
        frozen: 0,
    };
    for (_, _, e) in tree.all_param_entries() {
        if !seen.insert(e.label().to_string()) {
            continue;
        }
        let n: i64 = e.shape().iter().product();
        c.total += n;
        if e.will_train() {
            c.trainable += n;
        } else {
            c.frozen += n;
        }
    }
    c
}

fn param_bytes(tree: &Node) -> i64 {
    let mut seen = BTreeSet::new();
    tree.all_param_entries()
        .into_iter()
        .filter(|(_, _, e)| seen.insert(e.label().to_string()))
        .map(|(_, _, e)| e.shape().iter().product::<i64>() * elem_size(e.kind()))
        .sum()
}

impl Plan {
    /// Plans a recipe with shapes only (no parameter storage).
    pub fn shapes_only(recipe: Recipe, registry: &Registry) -> Result<Plan> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        Self::build(recipe, registry, &b)
    }

    /// Builds the tree and applies the patches, without shape inference (for `pzt show` and
    /// `pzt select`).
    pub fn tree_only(recipe: &Recipe, registry: &Registry) -> Result<Node> {
        let b = Builder::slots().dtype(recipe.param_dtype);
        let (tree, _) = build_tree(recipe, registry, &b)?;
        Ok(tree)
    }

    /// Plans a recipe building parameters with `builder` (slots or real values).
    pub fn build(recipe: Recipe, registry: &Registry, builder: &Builder) -> Result<Plan> {
        let sources = recipe.resolved.sources.clone();
        let fail = |d: Diagnostic| recipe_error(&sources, d);
        let (tree, mb_locs) = build_tree(&recipe, registry, builder)?;
        let counts = count_params(&tree);
        let mut activations = 0;
        let mut output = None;
        if let Some(input) = &recipe.input {
            let (out, trace) = trace_leaf_outputs(|| infer_shapes(&tree, input));
            match out {
                Ok(o) => output = Some(o),
                Err(e) => {
                    let path = e.layer_path().unwrap_or_default();
                    let locs = &mb_locs;
                    let mut segs: Vec<&str> = if path == "<root>" {
                        vec![]
                    } else {
                        path.split('.').collect()
                    };
                    let loc = loop {
                        if let Some(l) = locs.get(&segs.join(".")) {
                            break Some(l.clone());
                        }
                        if segs.pop().is_none() {
                            break None;
                        }
                    };
                    let kind = if path == "<root>" {
                        Some(tree.kind().to_string())
                    } else {
                        tree.get(&path.split('.').map(String::from).collect::<Vec<_>>())
                            .ok()
                            .map(|n| n.kind().to_string())
                    };
                    let d = Diagnostic::new(format!(
                        "shape check failed at layer `{path}`{}: {}",
                        kind.map(|k| format!(" ({k})")).unwrap_or_default(),
                        e.root_cause()
                    ))
                    .at(loc)
                    .note(format!(
                        "the model input is {}",
                        super::report::describe_input(input)
                    ));
                    return Err(fail(d));
                }
            }
            // What stays for backward, plus the largest recomputed segment.
            let bytes = |(_, n, k): &(String, i64, tch::Kind)| n * elem_size(*k);
            let kept: i64 = trace
                .iter()
                .filter(|r| r.0 != RECOMPUTE_PEAK)
                .map(bytes)
                .sum();
            let peak = trace
                .iter()
                .filter(|r| r.0 == RECOMPUTE_PEAK)
                .map(bytes)
                .max()
                .unwrap_or(0);
            activations = kept + peak;
        }
        let trainable_bytes = counts.trainable * elem_size(builder.kind);
        // Without `[optim]`, AdamW (the default optimizer): two float32 moments.
        let optimizer = recipe
            .optim
            .as_ref()
            .map_or(8, |o| o.state_bytes_per_value());
        let memory = Memory {
            parameters: param_bytes(&tree),
            gradients: trainable_bytes,
            optimizer: counts.trainable * optimizer,
            activations,
        };
        Ok(Plan {
            recipe,
            tree,
            output,
            counts,
            memory,
            world_size: 1,
        })
    }
}

/// Builds the `[model]` tree and applies the patches; returns it with the declaration place of
/// each tree path.
pub(crate) fn build_tree(
    recipe: &Recipe,
    registry: &Registry,
    builder: &Builder,
) -> Result<(Node, std::collections::BTreeMap<String, super::source::Loc>)> {
    let sources = &recipe.resolved.sources;
    if !recipe.has_model {
        return Err(recipe_error(
            sources,
            super::sections::no_model(&recipe.resolved),
        ));
    }
    let mut mb = ModelBuilder::new(builder, registry);
    mb.base_dir = recipe
        .resolved
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tree = mb
        .build(&recipe.model, &[], &["model".to_string()])
        .map_err(|d| recipe_error(sources, d))?;
    let tree = apply_patches(tree, &recipe.patches, &mb).map_err(|d| recipe_error(sources, d))?;
    let tree =
        super::strategy::apply_strategy(tree, recipe, &mb).map_err(|d| recipe_error(sources, d))?;
    Ok((tree, mb.locs.into_inner()))
}

/// Runs the model on a meta input with every parameter bound to a meta tensor.
/// The side inputs a shape check passes: for each `ApplyExplicitAttentionMask`, a boolean meta
/// mask `{seq, kv_seq}` over the input's `seq` axis (its last axis when none is named so), as
/// `pzt logits --mask` gives one.
fn planning_side_inputs(tree: &Node, input: &InputSpec) -> Result<SideInputs> {
    let mut side = SideInputs::new();
    let n = input
        .axes
        .get("seq")
        .or_else(|| input.axes.values().last())
        .copied()
        .unwrap_or(1);
    for (_, m) in crate::tree::select(tree)
        .at_instances_of("ApplyExplicitAttentionMask")
        .get()
    {
        if let Some(l) = m.layer_as::<crate::layers::masks::ApplyExplicitAttentionMask>() {
            let mask =
                NamedTensor::wrap(meta_empty(&[n, n], tch::Kind::Bool)?, &["seq", "kv_seq"])?;
            side = side.with_tensor(&l.mask_input, mask);
        }
    }
    Ok(side)
}

fn infer_shapes(tree: &Node, input: &InputSpec) -> Result<(Vec<(String, i64)>, tch::Kind)> {
    // Every parameter becomes a meta tensor of its shape and dtype (real values are not
    // needed, and must not meet meta activations).
    let meta = tree.map_entries(
        &mut |p| {
            Ok(ParamEntry::Frozen(FrozenParameter::new(
                p.label().to_string(),
                &meta_empty(&p.shape(), p.kind())?,
            )?))
        },
        // Fresh state variables: a meta forward must not leave meta values in the model's.
        &mut |s| {
            Ok(crate::params::StateEntry::Var(
                crate::params::StateVariable::new(s.label().to_string(), None),
            ))
        },
    )?;
    let sizes: Vec<i64> = input.axes.values().copied().collect();
    let names: Vec<&str> = input.axes.keys().map(|s| s.as_str()).collect();
    let x = NamedTensor::wrap(meta_empty(&sizes, input.dtype)?, &names)?;
    let _ng = tch::no_grad_guard();
    let y = meta.forward(x, &planning_side_inputs(tree, input)?)?;
    let y = y.into_tensor().map_err(|e| Error::Layer {
        path: vec![],
        source: Box::new(e),
    })?;
    Ok((y.named_shape(), y.kind()))
}
