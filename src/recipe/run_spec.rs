//! Compiling a recipe into the typed [`RunSpec`] that the trainer runs, and pointing the
//! trainer's errors about a section's keys back at the recipe.

use super::plan::Plan;
use super::source::{Diagnostic, Loc};
use super::{diagnose, recipe_error, Recipe};
use crate::base::{Error, Result};
use crate::spec::{InputRoles, RunSpec};
use crate::tree::Registry;

impl Recipe {
    fn need<'a, T>(&self, v: &'a Option<T>, section: &str) -> Result<&'a T> {
        v.as_ref().ok_or_else(|| {
            let d = Diagnostic::new(format!("training needs a `[{section}]` section"))
                .at(Some(Loc {
                    file: 0,
                    span: 0..0,
                }))
                .note("see docs/training.md for the keys");
            recipe_error(&self.resolved.sources, d)
        })
    }

    /// The run `pzt train` trains: needs `[data]`, `[train]` and `[optim]`.
    pub fn train_spec(&self, registry: &Registry) -> Result<RunSpec> {
        self.need(&self.data, "data")?;
        self.need(&self.train, "train")?;
        self.need(&self.optim, "optim")?;
        self.eval_spec(registry)
    }

    /// The run `pzt eval` evaluates: needs `[data]` and `[train]`.
    pub fn eval_spec(&self, registry: &Registry) -> Result<RunSpec> {
        let data = self.need(&self.data, "data")?.clone();
        let train = self.need(&self.train, "train")?.clone();
        let input = match &self.input {
            Some(i) => match &i.roles {
                Some(r) => r.clone(),
                None => return Err(Error::Config("training needs `[model.input]` with exactly two axes: (batch, seq) or (batch, features)".into())),
            },
            None if data.is_lm() => InputRoles::tokens("batch", "seq"),
            None => InputRoles::features("batch", "features"),
        };
        // The model is checked (shapes on the meta device) before anything runs, so that a
        // mistake in it is reported at its place in the recipe.
        Plan::shapes_only(self.clone(), registry)?;
        Ok(RunSpec {
            run: self.run.clone(),
            model: super::plan::model_spec(self, registry)?,
            registry: registry.clone(),
            param_dtype: self.param_dtype,
            input,
            data,
            train,
            objective: self.objective.clone(),
            optim: self.optim.clone(),
            checkpoint: self.checkpoint.clone(),
            base_dir: self.base_dir(),
            recipe_toml: self.resolved_toml(),
            model_source: self.hf_dir().map(|d| d.canonicalize().unwrap_or(d)),
            model_checkpoint: self.model_checkpoint(),
            reference_model: super::plan::reference_spec(self, registry)?,
        })
    }

    /// Turns an [`Error::InSection`] (a bad value of a section's key, found while running) into
    /// a located recipe error; other errors pass through.
    pub fn locate(&self, e: Error) -> Error {
        let Error::InSection {
            section,
            field,
            message,
        } = e
        else {
            return e;
        };
        let unlocated = || Error::ConfigField {
            field: field.clone(),
            message: message.clone(),
        };
        let Some(entry) = self.resolved.root.as_table().and_then(|t| t.get(&section)) else {
            return unlocated();
        };
        let Some(tab) = entry.node.as_table() else {
            return unlocated();
        };
        let d = diagnose::config_error(
            unlocated(),
            tab,
            entry.node.loc.clone(),
            std::slice::from_ref(&section),
            &[],
        );
        recipe_error(&self.resolved.sources, d)
    }

    /// The resolved recipe as TOML, with data paths made absolute, for `recipe.toml` in
    /// checkpoints.
    pub fn resolved_toml(&self) -> String {
        let mut v = self.resolved.root.to_toml();
        let base = self.base_dir();
        let abs = |s: &str| {
            let p = base.join(s);
            p.canonicalize().unwrap_or(p).display().to_string()
        };
        for (section, sub, key) in [
            ("model", None, "hf"),
            ("model", None, "checkpoint"),
            ("strategy", Some("lora"), "init_from"),
        ] {
            let table = v.get_mut(section).and_then(|m| m.as_table_mut());
            let table = match sub {
                Some(sub) => table
                    .and_then(|t| t.get_mut(sub))
                    .and_then(|t| t.as_table_mut()),
                None => table,
            };
            if let Some(toml::Value::String(h)) = table.and_then(|m| m.get_mut(key)) {
                *h = abs(h);
            }
        }
        // Paths in `[data]` (and in each `[[data.sources]]`): files, tokenizer, chat template.
        let fix = |d: &mut toml::Table| {
            if let Some(toml::Value::Array(files)) = d.get_mut("files") {
                for f in files.iter_mut() {
                    if let toml::Value::String(s) = f {
                        *s = abs(s);
                    }
                }
            }
            if let Some(toml::Value::String(t)) = d.get_mut("tokenizer") {
                if t != "bytes" {
                    *t = abs(t);
                }
            }
            if let Some(toml::Value::String(t)) = d.get_mut("chat_template") {
                *t = abs(t);
            }
        };
        if let Some(d) = v.get_mut("data").and_then(|d| d.as_table_mut()) {
            fix(d);
            if let Some(toml::Value::Array(parts)) = d.get_mut("sources") {
                for p in parts.iter_mut() {
                    if let Some(t) = p.as_table_mut() {
                        fix(t);
                    }
                }
            }
        }
        toml::to_string(&v).unwrap_or_default()
    }
}
