//! The reference model of DPO, IPO and KTO (`[objective] reference`): what the policy's
//! log-probabilities are compared with. It runs without gradient and without dropout.
//!
//! - `"initial"`: the model as the run starts. When every trained parameter belongs to a
//!   (non-DoRA) LoRA adapter whose update is zero at the start, that is the model with its
//!   adapters off, which costs nothing; otherwise a frozen copy of the trained parameters is
//!   taken when the model is built (before a resumed run loads its checkpoint), the frozen
//!   ones shared.
//! - `"base"`: the model with its adapters off.
//! - a path: that model (a pzt checkpoint or a Hugging Face directory), every parameter frozen;
//!   it must share the model's vocabulary.

use crate::base::{Error, Result, TorchContext};
use crate::layers::toolshed::lora::LowRankAdapter;
use crate::params::{FrozenParameter, ParamEntry};
use crate::spec::{Reference, RunSpec};
use crate::tree::{Builder, Node};

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

/// A digest of the reference's parameters (labels, shapes and values; for the adapters off,
/// the model's parameters outside its adapters' updates): what precomputed log-probabilities
/// are kept under.
pub fn fingerprint(r: &RefModel, tree: &Node) -> Result<String> {
    let (t, off) = match r {
        RefModel::AdaptersOff => (tree, true),
        RefModel::Frozen(t) => (t.as_ref(), false),
    };
    let mut skip = std::collections::HashSet::new();
    if off {
        t.walk(&mut |_, n| {
            if let (Some(_), Ok(u)) = (n.layer_as::<LowRankAdapter>(), n.child("update")) {
                for (_, _, e) in u.all_param_entries() {
                    skip.insert(e.label().to_string());
                }
            }
        });
    }
    let mut params: Vec<crate::params::Parameter> = vec![];
    let mut seen = std::collections::HashSet::new();
    for (_, _, e) in t.all_param_entries() {
        if skip.contains(e.label()) || !seen.insert(e.label().to_string()) {
            continue;
        }
        params.push(crate::params::Parameter::new(e.label(), e.value()?));
    }
    let tag = if off { "adapters off" } else { "frozen" };
    Ok(format!(
        "{tag}:{}",
        crate::params::fingerprint::fingerprint(&params)?
    ))
}

/// Whether the tree has LoRA adapters.
fn has_adapters(tree: &Node) -> bool {
    let mut any = false;
    tree.walk(&mut |_, n| any |= n.layer_as::<LowRankAdapter>().is_some());
    any
}

/// The reference of the run's objective for its model `tree` as built (None when the objective
/// has none); a reference from another directory is built with `builder`.
pub fn build(spec: &RunSpec, tree: &Node, builder: &Builder) -> Result<Option<RefModel>> {
    let objective = &spec.objective;
    if !objective.needs_reference() {
        return Ok(None);
    }
    if objective.precompute_reference && objective.kind == crate::spec::ObjectiveKind::Kto {
        return Err(Error::ConfigField {
            field: "precompute_reference".into(),
            message: "[objective]: KTO's mismatched rows are formed in each batch, so their reference cannot be computed ahead; remove precompute_reference".into(),
        });
    }
    match &objective.reference {
        Reference::Base if has_adapters(tree) => Ok(Some(RefModel::AdaptersOff)),
        Reference::Base => Err(Error::ConfigField {
            field: "reference".into(),
            message: "[objective]: reference = \"base\" is the model with its adapters off, but the model has no LoRA adapters; use \"initial\"".into(),
        }),
        Reference::Initial if adapters_are_zero(tree)? => Ok(Some(RefModel::AdaptersOff)),
        Reference::Initial => Ok(Some(RefModel::Frozen(Box::new(frozen_copy(tree, false)?)))),
        Reference::Path(p) => {
            let m = spec.reference_model.as_ref().ok_or_else(|| {
                Error::Config(format!("[objective]: reference = {p:?}: the model is missing"))
            })?;
            let r = m.build(&spec.registry, builder)?;
            same_vocabulary(tree, &r, p)?;
            Ok(Some(RefModel::Frozen(Box::new(frozen_copy(&r, true)?))))
        }
    }
}

/// The vocabulary size of a model's first embedding.
pub(super) fn vocabulary(tree: &Node) -> Option<i64> {
    crate::tree::select(tree)
        .at_instances_of("EmbeddingLookup")
        .get()
        .first()
        .and_then(|(_, n)| {
            n.layer_as::<crate::layers::embedding::EmbeddingLookup>()
                .map(|l| l.vocab_size)
        })
}

/// A reference from another directory must read the same tokens: the same vocabulary size.
fn same_vocabulary(model: &Node, reference: &Node, path: &str) -> Result<()> {
    match (vocabulary(model), vocabulary(reference)) {
        (Some(a), Some(b)) if a != b => Err(Error::ConfigField {
            field: "reference".into(),
            message: format!("[objective]: reference = {path:?} has a vocabulary of {b} tokens, the model {a}: the reference must share the model's tokenizer"),
        }),
        _ => Ok(()),
    }
}

/// The tree with its trainable parameters (with `all`, every live one) frozen at their current
/// values (the others shared).
fn frozen_copy(tree: &Node, all: bool) -> Result<Node> {
    tree.map_params(&mut |e| match e {
        ParamEntry::Bound(p) if all || p.trainable() => Ok(ParamEntry::Frozen(
            FrozenParameter::new(p.label(), &p.value())?,
        )),
        other => Ok(other.clone()),
    })
}
