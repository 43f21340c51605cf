//! `[model] checkpoint = "runs/x/checkpoints/step-N"`: a pzt checkpoint as the start of a new
//! run. The checkpoint's own recipe builds its model (patches and strategy included), which is
//! continued from the checkpoint ([`crate::assembly::checkpoint`]: values loaded, adapters
//! merged, everything trainable), and this recipe's patches and `[strategy]` apply on top. A
//! chain of checkpoints is followed with the directories it went through, so that a loop ends
//! with an error.

use super::decode::{check_keys, join, key_loc};
use super::model::ModelBuilder;
use super::raw::{RTable, RVal};
use super::source::Diagnostic;
use super::Recipe;
use crate::base::{Error, Result};
use crate::tree::Node;
use std::path::{Path, PathBuf};

/// How many checkpoints a chain of `checkpoint = ...` may go through.
const MAX_DEPTH: usize = 16;

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

/// Builds the model of checkpoint `dir`, which `chain` (outermost first, `dir` last) reached:
/// its own recipe's model, continued from the checkpoint ([`crate::assembly::checkpoint`]).
fn load(mb: &ModelBuilder<'_>, dir: &Path, chain: &[PathBuf]) -> Result<Node> {
    let inner = checkpoint_recipe(dir)?;
    let (tree, _) = super::plan::build_tree_in(&inner, mb.registry, mb.builder, chain)?;
    crate::assembly::checkpoint::continued(dir, tree, mb.builder)
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
    if mb.chain.len() >= MAX_DEPTH {
        return Err(Diagnostic::new(format!(
            "`checkpoint` chains go through at most {MAX_DEPTH} checkpoints"
        ))
        .at(key_loc(t, "checkpoint"))
        .key(join(&kp)));
    }
    let path = mb.base_dir.join(dir);
    let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
    if mb.chain.contains(&canonical) {
        return Err(Diagnostic::new(format!(
            "`{}` is already being loaded: the chain of `checkpoint = ...` loops",
            path.display()
        ))
        .at(key_loc(t, "checkpoint"))
        .key(join(&kp)));
    }
    let mut chain = mb.chain.clone();
    chain.push(canonical);
    load(mb, &path, &chain).map_err(|e| {
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
