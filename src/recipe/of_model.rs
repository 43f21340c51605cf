//! The recipe behind what the commands are given: any MODEL argument ([`of_model`]), an
//! isolated submodel ([`of_replay`]), and what loading a recipe's model needs
//! ([`Recipe::model_load`]).

use super::plan::Plan;
use super::Recipe;
use crate::base::{Error, Result};
use crate::run::model_path::{model_path, resolve_model, ModelPath};
use crate::spec::ModelLoad;
use crate::tree::Registry;
use std::path::Path;

/// The recipe behind any model path, with `sets` applied: the file itself, a checkpoint's
/// `recipe.toml`, or for a HuggingFace directory the recipe `[model] hf = DIR` with a declared
/// input of one sequence of 8 tokens (what `pzt plan` checks shapes on).
pub fn of_model(path: &Path, sets: &[String]) -> Result<Recipe> {
    let path = &resolve_model(path)?;
    match model_path(path)? {
        ModelPath::Recipe => Recipe::load(path, sets),
        ModelPath::Checkpoint => Recipe::load(&path.join("recipe.toml"), sets),
        ModelPath::Hf => {
            let name = path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "hf".into());
            let text = format!(
                "# generated for the HuggingFace model directory {}\n[run]\nname = {}\n\n[model]\nhf = \".\"\ninput = {{ axes = {{ batch = 1, seq = 8 }}, dtype = \"int64\" }}\n",
                path.display(),
                toml::Value::String(name)
            );
            let resolved = super::resolve::resolve_text(&path.join(HF_RECIPE), text, sets)
                .map_err(|(s, d)| super::recipe_error(&s, d))?;
            Recipe::decode(resolved)
        }
    }
}

/// The name of the recipe [`of_model`] makes for a HuggingFace directory (shown in messages;
/// no such file is written).
pub const HF_RECIPE: &str = "(hf-model).toml";

/// The recipe of the isolated submodel in `dir` (`submodel.toml`), with `sets` and the
/// `[[patch]]`es of the file `patch` applied.
pub fn of_replay(dir: &Path, sets: &[String], patch: Option<&Path>) -> Result<Recipe> {
    let Some(p) = patch else {
        return Recipe::load(&dir.join("submodel.toml"), sets);
    };
    let abs = p
        .canonicalize()
        .map_err(|e| Error::Config(format!("--patch {}: {e}", p.display())))?;
    let text = format!(
        "include = [\"submodel.toml\", {}]\n",
        toml::Value::String(abs.display().to_string())
    );
    let resolved = super::resolve::resolve_text(&dir.join("replay.toml"), text, sets)
        .map_err(|(s, d)| super::recipe_error(&s, d))?;
    Recipe::decode(resolved)
}

impl Recipe {
    /// What loading this recipe's model needs (`pzt logits`, `generate`, `export`, `show`):
    /// the model, checked on the meta device first, its seed and dtype, and where its
    /// tokenizer and chat template are.
    pub fn model_load(&self, registry: &Registry) -> Result<ModelLoad> {
        Plan::shapes_only(self.clone(), registry)?;
        Ok(ModelLoad {
            model: super::plan::model_spec(self, registry)?,
            registry: registry.clone(),
            seed: self.run.seed,
            param_dtype: self.param_dtype,
            data: self.data.clone(),
            base_dir: self
                .resolved
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            input: self.input.as_ref().and_then(|i| i.roles.clone()),
            hf_dir: self.hf_dir(),
        })
    }
}
