//! `[model] checkpoint = "runs/x/checkpoints/step-N"`: a pzt checkpoint as the start of a new
//! run. The checkpoint's own recipe builds its model (patches and strategy included), the
//! checkpoint's parameters are loaded into it (its base checked), LoRA adapters are merged into
//! their Linears and activation checkpointing is removed; every parameter then trains again,
//! and this recipe's patches and `[strategy]` apply on top. Labels stay those of the first
//! model, so an HF model fine-tuned this way still exports to its family's layout.

use super::decode::{check_keys, join, key_loc};
use super::model::ModelBuilder;
use super::raw::{RTable, RVal};
use super::source::Diagnostic;
use super::Recipe;
use crate::base::{Error, Result};
use crate::layers::toolshed::{merge_adapters, without_checkpointing};
use crate::params::{ParamEntry, Parameter, ParameterSlot};
use crate::tree::Node;
use std::path::{Path, PathBuf};

/// How many checkpoints a chain of `checkpoint = ...` may go through.
const MAX_DEPTH: usize = 16;

thread_local! {
    /// How deep in a chain of checkpoints the model being built is.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The checkpoint directories being loaded, outermost first.
    static CHAIN: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn checkpoint_recipe(dir: &Path) -> Result<Recipe> {
    if !dir.join("state.json").is_file() || !dir.join("recipe.toml").is_file() {
        return Err(Error::Config(format!(
            "`{}` is not a pzt checkpoint directory (state.json and recipe.toml)",
            dir.display()
        )));
    }
    Recipe::load(&dir.join("recipe.toml"), &[])
}

/// The HF directory behind `recipe`'s model, following `checkpoint = ...` chains (their raw
/// recipes only, so that a chain that loops ends here instead of recursing).
pub(super) fn hf_dir(recipe: &Recipe) -> Option<PathBuf> {
    let mut model = recipe.model.clone();
    let mut base = recipe.base_dir();
    let mut seen: Vec<PathBuf> = vec![];
    loop {
        let t = model.as_table()?;
        match (
            t.get("hf").map(|e| &e.node.val),
            t.get("checkpoint").map(|e| &e.node.val),
        ) {
            (Some(RVal::Str(s)), _) => return Some(base.join(s)),
            (_, Some(RVal::Str(s))) => {
                let dir = base.join(s);
                let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                if seen.contains(&canonical) || seen.len() >= MAX_DEPTH {
                    return None;
                }
                seen.push(canonical);
                let inner = super::resolve::resolve(&dir.join("recipe.toml"), &[]).ok()?;
                model = inner.root.as_table()?.get("model")?.node.clone();
                base = dir;
            }
            _ => return None,
        }
    }
}

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

fn load(mb: &ModelBuilder<'_>, dir: &Path) -> Result<Node> {
    let inner = checkpoint_recipe(dir)?;
    let (tree, _) = super::plan::build_tree(&inner, mb.registry, mb.builder)?;
    if mb.builder.seed.is_some() {
        crate::run::checkpoint::load_model(dir, &tree)?;
    }
    let before = tree.clone();
    let tree = without_checkpointing(&tree)?;
    let tree = if mb.builder.seed.is_some() {
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
            mb.builder.forget(e.label());
        }
    }
    all_trainable(&tree)
}

/// Builds `{ checkpoint = "dir" }`.
pub(super) fn build(
    mb: &ModelBuilder<'_>,
    dir: &str,
    t: &RTable,
    key_path: &[String],
) -> std::result::Result<Node, Diagnostic> {
    check_keys(
        t,
        &["checkpoint"],
        key_path,
        "a model from a checkpoint (`checkpoint = \"dir\"` stands alone)",
    )?;
    let mut kp = key_path.to_vec();
    kp.push("checkpoint".into());
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_DEPTH {
        return Err(Diagnostic::new(format!(
            "`checkpoint` chains go through at most {MAX_DEPTH} checkpoints"
        ))
        .at(key_loc(t, "checkpoint"))
        .key(join(&kp)));
    }
    let path = mb.base_dir.join(dir);
    let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
    let looped = CHAIN.with(|c| c.borrow().contains(&canonical));
    if looped {
        return Err(Diagnostic::new(format!(
            "`{}` is already being loaded: the chain of `checkpoint = ...` loops",
            path.display()
        ))
        .at(key_loc(t, "checkpoint"))
        .key(join(&kp)));
    }
    DEPTH.with(|d| d.set(depth + 1));
    CHAIN.with(|c| c.borrow_mut().push(canonical));
    let out = load(mb, &path);
    CHAIN.with(|c| c.borrow_mut().pop());
    DEPTH.with(|d| d.set(depth));
    out.map_err(|e| {
        // An error in the checkpoint's own recipe is already rendered: keep it whole.
        let message = match e {
            Error::Recipe(r) => format!(
                "cannot build the model of checkpoint `{}`: {}",
                path.display(),
                r.strip_prefix("error: ").unwrap_or(&r)
            ),
            other => other.to_string(),
        };
        Diagnostic::new(message)
            .at(key_loc(t, "checkpoint"))
            .key(join(&kp))
    })
}
