//! Recipes: TOML files that declare a run and its model, compiled into typed values.
//!
//! - [`resolve`]: read the file, merge `include`s, apply `--set` (every value keeps its
//!   location, see [`raw`]).
//! - [`Recipe::load`]: decode the sections strictly (`[run]`, `[model]`, `[[patch]]`, and the
//!   training sections into [`crate::spec`] types); derive or check the model input.
//! - [`plan::Plan`]: build the model tree (shapes only, or with values), apply patches, infer
//!   shapes on the meta device, count parameters and estimate memory.
//! - [`Recipe::train_spec`]: the typed [`crate::spec::RunSpec`] the trainer runs;
//!   [`Recipe::locate`] points the trainer's errors about a section's keys back at the recipe.
//!
//! Every mistake is an [`Error::Recipe`] whose message names the file, line and column, the key
//! path and what was expected.

pub mod decode;
pub mod diagnose;
mod from_checkpoint;
mod input;
pub mod model;
pub mod of_model;
pub mod patch;
pub mod plan;
pub mod raw;
pub mod report;
pub mod resolve;
mod run_spec;
pub mod sections;
pub mod source;
pub mod strategy;

use crate::base::{Error, Result};
use crate::data::spec::DataSpec;
use crate::spec::{
    CheckpointConfig, InputSpec, OptimConfig, RunSection, StrategyConfig, TrainConfig,
};
use decode::{check_keys, table};
use raw::{RNode, RTable, RVal};
use source::{Diagnostic, Loc, Sources};
use std::path::Path;

/// Top-level keys a recipe may have.
pub const SECTIONS: [&str; 10] = [
    "run",
    "model",
    "patch",
    "include",
    "data",
    "train",
    "optim",
    "checkpoint",
    "strategy",
    "objective",
];

/// What a patch does to each selected subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Wrap,
    InsertBefore,
    InsertAfter,
    Remove,
    /// LoRA adapters on the Linears in each selected subtree (`with` holds the settings).
    Lora,
    /// Stop training the parameters in each selected subtree.
    Freeze,
    /// Recompute each selected subtree in the backward pass.
    Checkpoint,
}

/// One `[[patch]]`.
#[derive(Debug, Clone)]
pub struct PatchSpec {
    pub index: usize,
    pub select: String,
    pub select_loc: Option<Loc>,
    pub action: Action,
    pub with: Option<RNode>,
    pub expect_count: Option<usize>,
    pub loc: Option<Loc>,
}

/// A decoded recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub resolved: resolve::Resolved,
    pub run: RunSection,
    /// Whether the recipe has `[model]` (only `pzt data` reads recipes without one).
    pub has_model: bool,
    /// The `[model]` layer table (without `input` and `dtype`).
    pub model: RNode,
    /// The model input: `[model.input]`, or derived from `[train] batch_size` and `[data]`.
    pub input: Option<InputSpec>,
    /// Parameter dtype (`[model] dtype`, default float32).
    pub param_dtype: tch::Kind,
    pub patches: Vec<PatchSpec>,
    /// `[data]`.
    pub data: Option<DataSpec>,
    /// `[train]`.
    pub train: Option<TrainConfig>,
    /// `[optim]`.
    pub optim: Option<OptimConfig>,
    /// `[checkpoint]` (defaults when absent).
    pub checkpoint: CheckpointConfig,
    /// `[strategy]` (full fine-tuning when absent).
    pub strategy: StrategyConfig,
    /// `[objective]` (the next-token loss when absent).
    pub objective: crate::spec::Objective,
}

/// Decodes the section `name` of `root` (if present) with `decode`, pointing errors about a
/// field at the field.
fn section<T>(
    root: &RTable,
    name: &str,
    decode: impl Fn(&toml::Table) -> Result<T>,
) -> Result<Option<T>, Diagnostic> {
    let Some(e) = root.get(name) else {
        return Ok(None);
    };
    let kp = vec![name.to_string()];
    let t = table(&e.node, &kp, &format!("`[{name}]`"))?;
    let cfg = t
        .iter()
        .map(|(k, v)| (k.clone(), v.node.to_toml()))
        .collect();
    decode(&cfg)
        .map(Some)
        .map_err(|err| diagnose::config_error(err, t, e.node.loc.clone(), &kp, &[]))
}

/// Decodes a section with serde, then checks its values.
fn serde_section<T: serde::de::DeserializeOwned>(
    root: &RTable,
    name: &str,
    validate: impl Fn(&T) -> Result<()>,
) -> Result<Option<T>, Diagnostic> {
    section(root, name, |cfg| {
        let v: T = crate::tree::registry::decode_config(&format!("[{name}]"), cfg)?;
        validate(&v)?;
        Ok(v)
    })
}

/// Renders a diagnostic against the sources into an [`Error::Recipe`].
pub fn recipe_error(sources: &Sources, d: Diagnostic) -> Error {
    Error::Recipe(d.render(sources))
}

impl Recipe {
    /// Reads, resolves and decodes a recipe file.
    pub fn load(path: &Path, sets: &[String]) -> Result<Recipe> {
        let resolved = resolve::resolve(path, sets).map_err(|(s, d)| recipe_error(&s, d))?;
        Self::decode(resolved)
    }

    /// Decodes a resolved raw recipe.
    pub fn decode(resolved: resolve::Resolved) -> Result<Recipe> {
        let mut r = Self::decode_located(&resolved)
            .map(|parts| parts.into_recipe(resolved.clone()))
            .map_err(|d| recipe_error(&resolved.sources, d))?;
        r.check_hf()
            .map_err(|d| recipe_error(&resolved.sources, d))?;
        r.default_tokenizer();
        Ok(r)
    }

    /// `[model] hf = DIR` must name a Hugging Face model directory; said at the key before
    /// anything else (the data, tokenized with the model's tokenizer, is prepared first).
    fn check_hf(&self) -> std::result::Result<(), Diagnostic> {
        let Some(t) = self.model.as_table() else {
            return Ok(());
        };
        let Some(RVal::Str(hf)) = t.get("hf").map(|e| &e.node.val) else {
            return Ok(());
        };
        let dir = self.base_dir().join(hf);
        if dir.join("config.json").is_file() {
            return Ok(());
        }
        let why = if dir.is_dir() {
            "has no config.json"
        } else {
            "does not exist"
        };
        Err(Diagnostic::new(format!(
            "`{}` is not a HuggingFace model directory: it {why}",
            dir.display()
        ))
        .at(decode::key_loc(t, "hf"))
        .key("model.hf"))
    }

    /// A pretrained model's data is tokenized with the model's own tokenizer unless `[data]`
    /// names one.
    fn default_tokenizer(&mut self) {
        let given = self
            .resolved
            .root
            .as_table()
            .and_then(|t| t.get("data"))
            .and_then(|d| d.node.as_table())
            .is_some_and(|d| d.contains_key("tokenizer"));
        if given {
            return;
        }
        let Some(dir) = self.hf_dir() else { return };
        if !dir.join("tokenizer.json").is_file() {
            return;
        }
        let dir = dir.canonicalize().unwrap_or(dir);
        if let Some(d) = self.data.as_mut() {
            d.set_tokenizer(&dir.display().to_string());
        }
    }

    fn decode_located(res: &resolve::Resolved) -> Result<Parts, Diagnostic> {
        let root = table(&res.root, &[], "a recipe")?;
        check_keys(root, &SECTIONS, &[], "a recipe")?;
        let run = sections::run(res, root)?;
        // Only `pzt data` reads a recipe without a model; everything that builds one says so.
        let has_model = root.contains_key("model");
        let (model, declared, param_dtype) = if has_model {
            sections::model(res, root)?
        } else {
            (
                RNode {
                    val: raw::RVal::Table(Default::default()),
                    loc: None,
                },
                None,
                tch::Kind::Float,
            )
        };
        let patches = sections::patches(root)?;
        let data = section(root, "data", DataSpec::decode)?;
        let train = serde_section(root, "train", TrainConfig::validate)?;
        let optim = serde_section(root, "optim", OptimConfig::validate)?;
        let checkpoint =
            serde_section(root, "checkpoint", CheckpointConfig::validate)?.unwrap_or_default();
        let strategy =
            serde_section(root, "strategy", StrategyConfig::validate)?.unwrap_or_default();
        let objective =
            section(root, "objective", crate::spec::Objective::decode)?.unwrap_or_default();
        let input = input::resolve(res, declared, train.as_ref(), data.as_ref())?;
        Ok(Parts {
            run,
            has_model,
            model,
            input,
            param_dtype,
            patches,
            data,
            train,
            optim,
            checkpoint,
            strategy,
            objective,
        })
    }

    /// The HF model directory the model comes from: `[model] hf = "..."`, or that of the run
    /// `[model] checkpoint = "..."` continues.
    pub fn hf_dir(&self) -> Option<std::path::PathBuf> {
        from_checkpoint::hf_dir(self)
    }

    /// Every file and directory a run of this recipe reads or owns: the recipe and its
    /// includes, the data files and tokenizer, the model directory or checkpoint, and the run
    /// directory. A command's outputs are checked against these.
    pub fn input_paths(&self) -> Vec<std::path::PathBuf> {
        let base = self.base_dir();
        let mut out: Vec<std::path::PathBuf> = (0..)
            .map_while(|i| self.resolved.sources.file(i))
            .filter(|f| !f.name.starts_with("--set"))
            .map(|f| std::path::PathBuf::from(&f.name))
            .collect();
        if let Some(d) = &self.data {
            out.extend(d.files().iter().map(|f| base.join(f)));
            out.extend(d.tokenizer().map(|t| base.join(t)));
            out.extend(d.cache_dir.as_ref().map(|c| base.join(c)));
        }
        out.extend(self.hf_dir());
        out.extend(self.model_checkpoint());
        out.push(self.run.out_dir.clone());
        out
    }

    /// The checkpoint directory the model starts from (`[model] checkpoint = ...`).
    pub fn model_checkpoint(&self) -> Option<std::path::PathBuf> {
        match self.model_table_value("checkpoint") {
            Some(RVal::Str(c)) => Some(self.base_dir().join(c)),
            _ => None,
        }
    }

    /// A string or other value of `[model]` by key.
    fn model_table_value(&self, key: &str) -> Option<&RVal> {
        self.model.as_table()?.get(key).map(|e| &e.node.val)
    }

    /// The directory the recipe's relative paths start from.
    pub fn base_dir(&self) -> std::path::PathBuf {
        self.resolved
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// The decoded sections, before they are put together with the sources.
struct Parts {
    run: RunSection,
    has_model: bool,
    model: RNode,
    input: Option<InputSpec>,
    param_dtype: tch::Kind,
    patches: Vec<PatchSpec>,
    data: Option<DataSpec>,
    train: Option<TrainConfig>,
    optim: Option<OptimConfig>,
    checkpoint: CheckpointConfig,
    strategy: StrategyConfig,
    objective: crate::spec::Objective,
}

impl Parts {
    fn into_recipe(self, resolved: resolve::Resolved) -> Recipe {
        Recipe {
            resolved,
            run: self.run,
            has_model: self.has_model,
            model: self.model,
            input: self.input,
            param_dtype: self.param_dtype,
            patches: self.patches,
            data: self.data,
            train: self.train,
            optim: self.optim,
            checkpoint: self.checkpoint,
            strategy: self.strategy,
            objective: self.objective,
        }
    }
}
