//! What a model costs before it runs: parameter counts, shape inference on the meta device,
//! and a training-memory estimate.
//!
//! Shape inference binds every parameter to a meta tensor (libtorch's shape-only device) and
//! runs the real forward pass on a meta input of the model input, so an axis-name or size
//! mismatch anywhere is an error with the layer path before anything trains.
//!
//! Memory estimate for training: parameters (their dtype), gradients (one per trainable
//! parameter element, parameter dtype), optimizer state (what the optimizer keeps per
//! trainable element), and activations: the sum of the outputs of every leaf layer for the
//! model input (what autograd keeps for the backward pass, roughly); a `Checkpointed` subtree
//! counts only its input, plus the largest such subtree's own activations (recomputed one at a
//! time).

use crate::backend::meta_empty;
use crate::base::dtype::elem_size;
use crate::base::{Error, Result};
use crate::named::NamedTensor;
use crate::params::{FrozenParameter, ParamEntry};
use crate::tree::{trace_leaf_outputs, Node, SideInputs, RECOMPUTE_PEAK};
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
    /// A preference objective's frozen reference copy (0 when it needs none).
    pub reference: i64,
}

impl Memory {
    /// The sum.
    pub fn total(&self) -> i64 {
        self.parameters + self.gradients + self.optimizer + self.activations + self.reference
    }
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

pub fn param_bytes(tree: &Node) -> i64 {
    let mut seen = BTreeSet::new();
    tree.all_param_entries()
        .into_iter()
        .filter(|(_, _, e)| seen.insert(e.label().to_string()))
        .map(|(_, _, e)| match &e {
            // A quantized weight takes its codes' and scales' bytes.
            ParamEntry::Quantized(q) => q.bytes(),
            ParamEntry::Slot(s) if s.quantized.is_some() => quantized_bytes(s),
            _ => e.shape().iter().product::<i64>() * elem_size(e.kind()),
        })
        .sum()
}

/// The bytes a weight of this slot will take quantized: NF4's 4 bits a value, an int8 scaler
/// per 64 values and a factor per 256 scalers; int8's byte a value and a scale per output
/// channel (the first axis is the inputs).
fn quantized_bytes(s: &crate::params::ParameterSlot) -> i64 {
    let n: i64 = s.shape.iter().product();
    let e = elem_size(s.kind);
    match s.quantized {
        Some("nf4") => n / 2 + n / 64 + (n / 64 / 256) * e + e,
        _ => n + (n / s.shape.first().copied().unwrap_or(1).max(1)) * e,
    }
}

/// A model input for shape inference: named axes with sizes, a dtype, and their roles.
pub type Input<'a> = &'a crate::layers::input::InputSpec;

/// The output's named shape and dtype, from shape inference.
pub type Output = (Vec<(String, i64)>, tch::Kind);

/// Infers the output of `tree` for `input` and the activations training keeps, in bytes
/// (an error names the layer that failed).
pub fn activations(tree: &Node, input: Input) -> Result<(Output, i64)> {
    let (out, trace) = trace_leaf_outputs(|| infer_shapes(tree, input));
    let out = out?;
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
    Ok((out, kept + peak))
}

/// The memory training `tree` takes: `activations` (from [`activations`]), parameters of
/// `param_kind`, and `optimizer_bytes` of optimizer state per trainable element.
pub fn memory(
    tree: &Node,
    activations: i64,
    param_kind: tch::Kind,
    optimizer_bytes: i64,
) -> Memory {
    let counts = count_params(tree);
    Memory {
        parameters: param_bytes(tree),
        gradients: counts.trainable * elem_size(param_kind),
        optimizer: counts.trainable * optimizer_bytes,
        activations,
        reference: 0,
    }
}

/// The side inputs a shape check passes: for each `ApplyExplicitAttentionMask`, a boolean meta
/// mask `{seq, kv_seq}` over the input's sequence (its last axis when it has no sequence
/// role), as `pzt logits --mask` gives one.
fn planning_side_inputs(tree: &Node, input: Input) -> Result<SideInputs> {
    let mut side = SideInputs::new();
    let n = input
        .seq()
        .map(|(_, n)| n)
        .or_else(|| input.axes.values().last().copied())
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

/// Runs the model on a meta input with every parameter bound to a meta tensor.
fn infer_shapes(tree: &Node, input: Input) -> Result<Output> {
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
