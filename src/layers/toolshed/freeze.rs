//! Turning training off for parts of a model: the parameters under a selection ([`freeze`]) or
//! outside it ([`train_only`]) stop being trained. A frozen live parameter keeps its storage
//! (the same values, shared with the tree it came from) but has `requires_grad` off, so it gets
//! no gradient and no optimizer state and costs only its weights; a frozen slot binds to such a
//! parameter. A parameter tied into several places is frozen in all of them.

use crate::base::Result;
use crate::params::{ParamEntry, Parameter, ParameterSlot};
use crate::tree::{Node, Selection};
use std::collections::{BTreeMap, BTreeSet};

/// The labels of the parameters under the selected subtrees.
pub fn labels_under(selection: &Selection) -> BTreeSet<String> {
    selection
        .get()
        .iter()
        .flat_map(|(_, n)| n.all_param_entries())
        .map(|(_, _, e)| e.label().to_string())
        .collect()
}

/// The tree with the parameters whose label `frozen(label)` says frozen turned off.
pub fn freeze_where(root: &Node, frozen: &dyn Fn(&str) -> bool) -> Result<Node> {
    let mut views: BTreeMap<String, Parameter> = BTreeMap::new();
    root.map_entries(
        &mut |e| {
            Ok(match e {
                ParamEntry::Bound(p) if p.trainable() && frozen(p.label()) => {
                    let v = views
                        .entry(p.label().to_string())
                        .or_insert_with(|| p.frozen_view());
                    ParamEntry::Bound(v.clone())
                }
                ParamEntry::Slot(s) if s.trainable && frozen(&s.label) => {
                    ParamEntry::Slot(ParameterSlot {
                        trainable: false,
                        ..s.clone()
                    })
                }
                other => other.clone(),
            })
        },
        &mut |s| Ok(s.clone()),
    )
}

/// Freezes the parameters under the selected subtrees (Penzai's `freeze_params` over a
/// selection, keeping the values live and shared).
pub fn freeze(selection: &Selection) -> Result<Node> {
    let labels = labels_under(selection);
    freeze_where(selection.root(), &|l| labels.contains(l))
}

/// Freezes every parameter except those under the selected subtrees.
pub fn train_only(selection: &Selection) -> Result<Node> {
    let labels = labels_under(selection);
    freeze_where(selection.root(), &|l| !labels.contains(l))
}
