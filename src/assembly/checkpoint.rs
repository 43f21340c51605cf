//! A pzt checkpoint continued as the start of a new model: the checkpoint's parameters are
//! loaded into its own model (its base checked), LoRA adapters are merged into their Linears
//! and activation checkpointing is removed; every parameter then trains again. Labels stay
//! those of the first model, so an HF model fine-tuned this way still exports to its family's
//! layout.

use crate::base::{Error, Result};
use crate::layers::toolshed::{merge_adapters, without_checkpointing};
use crate::params::{ParamEntry, Parameter, ParameterSlot};
use crate::tree::{Builder, Node};
use std::path::Path;

/// Every parameter trainable again (new handles on the same values).
fn all_trainable(tree: &Node) -> Result<Node> {
    tree.map_entries(
        &mut |e| {
            Ok(match e {
                ParamEntry::Bound(p) if !p.trainable() => {
                    ParamEntry::Bound(Parameter::new(p.label(), p.value()))
                }
                ParamEntry::Slot(s) if !s.trainable => ParamEntry::Slot(ParameterSlot {
                    trainable: true,
                    ..s.clone()
                }),
                other => other.clone(),
            })
        },
        &mut |s| Ok(s.clone()),
    )
}

/// `tree` (the model checkpoint `dir` was trained as, built with `builder`) continued from the
/// checkpoint: its values loaded (with a seeded builder; shapes only with slots), adapters
/// merged, checkpointing removed, everything trainable.
pub fn continued(dir: &Path, tree: Node, builder: &Builder) -> Result<Node> {
    if !dir.join("state.json").is_file() {
        return Err(Error::Config(format!(
            "`{}` is not a pzt checkpoint directory (no state.json)",
            dir.display()
        )));
    }
    if builder.seed.is_some() {
        crate::run::checkpoint::load_model(dir, &tree)?;
    }
    let before = tree.clone();
    let tree = without_checkpointing(&tree)?;
    let tree = if builder.seed.is_some() {
        merge_adapters(&tree)?
    } else {
        // Shapes only: the adapters' Linears, as slots.
        crate::tree::select(&tree)
            .at_instances_of("LowRankAdapter")
            .apply(|_, n| n.child("pretrained")?.child("0").cloned())?
    };
    // Labels that were merged away may be declared anew (a new adapter of another rank).
    let kept: std::collections::BTreeSet<String> = tree
        .all_param_entries()
        .into_iter()
        .map(|(_, _, e)| e.label().to_string())
        .collect();
    for (_, _, e) in before.all_param_entries() {
        if !kept.contains(e.label()) {
            builder.forget(e.label());
        }
    }
    all_trainable(&tree)
}
