//! The reference model of DPO, IPO and KTO (`[objective] reference`): what the policy's
//! log-probabilities are compared with. It runs without gradient and without dropout.
//!
//! - `"initial"`: the model as the run starts. When every trained parameter belongs to a
//!   (non-DoRA) LoRA adapter whose update is zero at the start, that is the model with its
//!   adapters off, which costs nothing; otherwise a frozen copy of the trained parameters is
//!   taken when the model is built (before a resumed run loads its checkpoint), the frozen
//!   ones shared.
//! - `"base"`: the model with its adapters off.

use crate::base::{Error, Result, TorchContext};
use crate::layers::toolshed::lora::LowRankAdapter;
use crate::params::{FrozenParameter, ParamEntry};
use crate::spec::{Objective, Reference};
use crate::tree::Node;

/// How the reference runs.
pub enum RefModel {
    /// The model itself with the side input `adapters` = false.
    AdaptersOff,
    /// A copy of the model with its trained parameters frozen as they were at the start.
    Frozen(Box<Node>),
}

/// Whether every LoRA adapter of `tree` is a plain one (not DoRA) whose update is zero now
/// (one of its factors all zeros), and every trainable parameter belongs to an adapter's
/// update. Then the model equals itself with the adapters off. Also false without adapters.
fn adapters_are_zero(tree: &Node) -> Result<bool> {
    let mut adapters = 0usize;
    let mut adapter_labels = std::collections::HashSet::new();
    let mut zero = true;
    let mut check: Vec<Node> = vec![];
    tree.walk(&mut |_, n| {
        if let Some(a) = n.layer_as::<LowRankAdapter>() {
            adapters += 1;
            zero &= !a.dora;
            if let Ok(u) = n.child("update") {
                check.push(u.clone());
            }
        }
    });
    for u in &check {
        let mut any_zero = false;
        for (_, _, e) in u.all_param_entries() {
            adapter_labels.insert(e.label().to_string());
            let v = e.value()?;
            let max = v
                .f_abs()
                .and_then(|a| a.f_max())
                .and_then(|m| m.f_double_value(&[]))
                .ctx("reference: adapter update")?;
            any_zero |= max == 0.0;
        }
        zero &= any_zero;
    }
    let outside = tree
        .trainable_parameters()
        .iter()
        .any(|p| !adapter_labels.contains(p.label()));
    Ok(adapters > 0 && zero && !outside)
}

/// Whether the tree has LoRA adapters.
fn has_adapters(tree: &Node) -> bool {
    let mut any = false;
    tree.walk(&mut |_, n| any |= n.layer_as::<LowRankAdapter>().is_some());
    any
}

/// The reference of `objective` for the model `tree` as built (None when the objective has
/// none).
pub fn build(objective: &Objective, tree: &Node) -> Result<Option<RefModel>> {
    if !objective.needs_reference() {
        return Ok(None);
    }
    if objective.precompute_reference {
        return Err(Error::ConfigField {
            field: "precompute_reference".into(),
            message: "[objective]: precompute_reference is not available yet; remove it (the reference runs beside the model each step)".into(),
        });
    }
    match &objective.reference {
        Reference::Base if has_adapters(tree) => Ok(Some(RefModel::AdaptersOff)),
        Reference::Base => Err(Error::ConfigField {
            field: "reference".into(),
            message: "[objective]: reference = \"base\" is the model with its adapters off, but the model has no LoRA adapters; use \"initial\"".into(),
        }),
        Reference::Initial if adapters_are_zero(tree)? => Ok(Some(RefModel::AdaptersOff)),
        Reference::Initial => Ok(Some(RefModel::Frozen(Box::new(frozen_copy(tree)?)))),
        Reference::Path(p) => Err(Error::ConfigField {
            field: "reference".into(),
            message: format!("[objective]: reference = {p:?}: a reference model from another directory is not available yet; use \"initial\" or \"base\""),
        }),
    }
}

/// The tree with its trainable parameters frozen at their current values (the others shared).
fn frozen_copy(tree: &Node) -> Result<Node> {
    tree.map_params(&mut |e| match e {
        ParamEntry::Bound(p) if p.trainable() => Ok(ParamEntry::Frozen(FrozenParameter::new(
            p.label(),
            &p.value(),
        )?)),
        other => Ok(other.clone()),
    })
}
