//! The typed run spec: what a recipe compiles into ([`crate::recipe`]) and what the trainer
//! takes ([`crate::train`]). Everything here is plain typed values: no TOML, no spans, no
//! diagnostics. The trainer sees only this; errors it finds in a section's values come back as
//! [`crate::Error::InSection`] for the recipe layer to point at.

pub mod objective;
pub mod optim;
pub mod strategy;
pub mod train;

pub use crate::run::{CheckpointConfig, EVAL_METRICS};
pub use objective::{Objective, ObjectiveKind, Reference};
pub use optim::{OptimConfig, OptimKind, Schedule};
pub use strategy::{StrategyConfig, StrategyKind};
pub use train::{DistBackend, Precision, TrainConfig};

use crate::assembly::ModelSpec;
use crate::data::spec::DataSpec;
use crate::tree::Registry;
use std::path::PathBuf;

/// `[run]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSection {
    /// Default: the recipe file's stem.
    pub name: String,
    /// Base seed (default 0).
    pub seed: u64,
    /// Default `runs/<name>`.
    pub out_dir: PathBuf,
}

pub use crate::layers::input::{InputRoles, InputSpec};

/// A model to load and run (`pzt logits`, `generate`, `export`, `show`): the model and what
/// running it on text needs.
#[derive(Clone, Debug)]
pub struct ModelLoad {
    pub model: ModelSpec,
    pub registry: Registry,
    /// The seed of its parameters' initialization.
    pub seed: u64,
    /// Parameter dtype (`[model] dtype`).
    pub param_dtype: tch::Kind,
    /// The data the model was declared with (its tokenizer and chat template).
    pub data: Option<DataSpec>,
    /// The directory that data and tokenizer paths are relative to.
    pub base_dir: PathBuf,
    /// The roles of its input's axes, when declared.
    pub input: Option<InputRoles>,
    /// The Hugging Face directory the model comes from.
    pub hf_dir: Option<PathBuf>,
}

/// A training or evaluation run.
#[derive(Clone)]
pub struct RunSpec {
    pub run: RunSection,
    /// The model (the trainer builds it with the seed, device and dtype of its builder).
    pub model: ModelSpec,
    /// The layer kinds and builders the model is built from.
    pub registry: Registry,
    /// Parameter dtype (`[model] dtype`).
    pub param_dtype: tch::Kind,
    /// The roles of the input's axes: (batch, seq) for language models, (batch, features)
    /// otherwise.
    pub input: InputRoles,
    pub data: DataSpec,
    pub train: TrainConfig,
    /// `[objective]` (the next-token loss when absent).
    pub objective: Objective,
    /// `[optim]` (needed to train, not to evaluate).
    pub optim: Option<OptimConfig>,
    pub checkpoint: CheckpointConfig,
    /// The directory that data and tokenizer paths are relative to (the recipe's).
    pub base_dir: PathBuf,
    /// The resolved recipe as TOML, with paths made absolute (each checkpoint's
    /// `recipe.toml`).
    pub recipe_toml: String,
    /// Where the pretrained model comes from (`[model] hf`), for checkpoints to name.
    pub model_source: Option<PathBuf>,
    /// The checkpoint the model starts from (`[model] checkpoint = ...`): its run keeps it
    /// while this run exists.
    pub model_checkpoint: Option<PathBuf>,
    /// The model of `[objective] reference = "path"`.
    pub reference_model: Option<ModelSpec>,
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("run", &self.run)
            .field("input", &self.input)
            .field("data", &self.data)
            .field("train", &self.train)
            .field("optim", &self.optim)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}
