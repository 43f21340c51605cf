//! The base a checkpoint was trained against: the frozen parameters (a fingerprint of their
//! values) and the structure and layer configs of the model around them. A checkpoint of a
//! LoRA run holds only its adapters, so loading it on another base (other weights, another
//! `config.json`, another `[strategy]`) would compute something else: it is refused, saying which.

use super::TrainState;
use crate::base::{Error, Result};
use crate::params::fingerprint::fingerprint;
use crate::params::Parameter;
use crate::tree::Node;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The frozen parameters a checkpoint was trained against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseRecord {
    /// Where they came from (the HF model directory), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How many distinct frozen parameters there are.
    pub parameters: usize,
    /// [`crate::params::fingerprint::fingerprint`] of their values.
    pub fingerprint: String,
    /// A hash of the base model's structure and layer configs (rope_theta, eps, sizes, ...),
    /// with adapters and activation checkpointing taken out: what, with the values, determines
    /// the function. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
}

/// The hash of what a base model computes, beyond its values: the structure and configs of
/// `tree` with each LoRA/DoRA adapter replaced by the Linear it adapts and activation
/// checkpointing removed.
pub fn base_structure(tree: &Node) -> Result<String> {
    let plain = crate::layers::toolshed::without_checkpointing(tree)?;
    let plain = crate::tree::select(&plain)
        .at_instances_of("LowRankAdapter")
        .apply(|_, n| n.child("pretrained")?.child("0").cloned())?;
    let text = toml::to_string(&plain.to_toml()?)
        .map_err(|e| Error::Config(format!("the model's structure: {e}")))?;
    Ok(format!(
        "{:016x}",
        crate::base::seed::fnv1a(text.as_bytes())
    ))
}

impl BaseRecord {
    /// The record of the frozen parameters of `tree` (None when everything trains).
    pub fn of(tree: &Node, model: Option<&Path>) -> Result<Option<BaseRecord>> {
        let frozen: Vec<Parameter> = tree
            .parameters()
            .into_iter()
            .filter(|p| !p.trainable())
            .collect();
        if frozen.is_empty() {
            return Ok(None);
        }
        Ok(Some(BaseRecord {
            model: model.map(|p| p.display().to_string()),
            parameters: frozen.len(),
            fingerprint: fingerprint(&frozen)?,
            structure: Some(base_structure(tree)?),
        }))
    }
}

/// Checks that the frozen parameters of `tree` are those checkpoint `dir` was trained against.
pub fn verify_base(dir: &Path, state: &TrainState, tree: &Node) -> Result<()> {
    let Some(want) = &state.base else {
        return Ok(());
    };
    let have = BaseRecord::of(tree, None)?;
    let now = have.as_ref().map_or(0, |h| h.parameters);
    if now != want.parameters {
        return Err(Error::Config(format!(
            "{}: this checkpoint was trained with {} frozen parameter(s), and the recipe now freezes {now}: its [strategy] (kind, trainable, freeze, LoRA targets) changed; use the checkpoint's own recipe ({}) or train into another out_dir",
            dir.join("state.json").display(),
            want.parameters,
            dir.join("recipe.toml").display()
        )));
    }
    if let (Some(w), Some(h)) = (
        &want.structure,
        have.as_ref().and_then(|h| h.structure.as_ref()),
    ) {
        if w != h {
            let what = want
                .model
                .as_ref()
                .map(|m| format!("the base model {m}"))
                .unwrap_or_else(|| "the model".to_string());
            return Err(Error::Config(format!(
                "{}: the configuration of {what} changed since this checkpoint was trained (its structure or a layer setting such as rope_theta, an epsilon or a size in config.json or the recipe; structure {w} in state.json, {h} now); the checkpoint holds only the trained parameters and needs the same base",
                dir.join("state.json").display(),
            )));
        }
    }
    let same = have
        .as_ref()
        .is_some_and(|h| h.fingerprint == want.fingerprint && h.parameters == want.parameters);
    if same {
        return Ok(());
    }
    let what = want
        .model
        .as_ref()
        .map(|m| format!("the base model {m}"))
        .unwrap_or_else(|| "the frozen parameters".to_string());
    Err(Error::Config(format!(
        "{}: {what} changed since this checkpoint was trained (fingerprint {} in state.json, {} now); the checkpoint holds only the trained parameters and needs the same base",
        dir.join("state.json").display(),
        want.fingerprint,
        have.map(|h| h.fingerprint).unwrap_or_else(|| "none".into())
    )))
}
