//! Loading a model for `pzt logits`, `pzt generate` and `pzt export`: a HuggingFace model
//! directory, a recipe, or a run checkpoint directory.

use crate::base::{Error, Result};
use crate::data::tokenizer::Tokenizer;
use crate::models::generate::LmAxes;
use crate::recipe::plan::Plan;
use crate::recipe::Recipe;
use crate::tree::{Builder, Node, Registry};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// A model ready to run.
pub struct Loaded {
    pub tree: Node,
    pub tokenizer: Option<Tokenizer>,
    /// The tokenizer file it came from (None for the built-in bytes tokenizer).
    pub tokenizer_path: Option<PathBuf>,
    /// The chat template: a chat recipe's `chat_template` file, else the tokenizer's.
    pub chat_template: Option<String>,
    pub eos: Vec<i64>,
    pub axes: LmAxes,
    /// The HF directory the model (or its recipe's `[model] hf`) came from.
    pub hf_dir: Option<PathBuf>,
}

fn axes_of(r: &Recipe) -> LmAxes {
    let mut ax = LmAxes::default();
    if let Some(i) = &r.input {
        let names: Vec<&String> = i.axes.keys().collect();
        if names.len() == 2 {
            ax.batch = names[0].clone();
            ax.seq = names[1].clone();
        }
    }
    ax
}

fn recipe_model(
    r: Recipe,
    registry: &Registry,
    device: Device,
    dtype: Option<Kind>,
) -> Result<Loaded> {
    let base = r
        .resolved
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let tok = match r.data.as_ref().and_then(|d| d.tokenizer()) {
        Some(name) => Some(Tokenizer::load(name, &base)?),
        None => None,
    };
    let hf = r.hf_dir();
    let axes = axes_of(&r);
    let data = r.data.clone();
    let b = Builder::new(r.run.seed)
        .on(device)
        .dtype(dtype.unwrap_or(r.param_dtype));
    let plan = Plan::build(r, registry, &b)?;
    let eos = tok.as_ref().map(|t| vec![t.eos_id()]).unwrap_or_default();
    Ok(Loaded {
        chat_template: chat_template_of(data.as_ref(), &base, tok.as_ref())?,
        tree: plan.tree,
        tokenizer_path: tok
            .as_ref()
            .and_then(Tokenizer::path)
            .map(Path::to_path_buf),
        tokenizer: tok,
        eos,
        axes,
        hf_dir: hf,
    })
}

fn chat_template_of(
    data: Option<&crate::data::spec::DataSpec>,
    base: &Path,
    tok: Option<&Tokenizer>,
) -> Result<Option<String>> {
    let file = match data.map(|d| &d.source) {
        Some(crate::data::spec::Source::Chat(c)) => c.chat_template.as_ref(),
        Some(crate::data::spec::Source::Parquet(p)) => p.chat_template.as_ref(),
        _ => None,
    };
    if let Some(f) = file {
        return crate::base::files::read_small_file(&base.join(f)).map(Some);
    }
    Ok(tok.and_then(|t| t.config().chat_template))
}

/// What a model path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPath {
    /// A HuggingFace model directory (config.json).
    Hf,
    /// A run checkpoint directory (state.json + recipe.toml).
    Checkpoint,
    /// A recipe file.
    Recipe,
}

/// The checkpoint a model argument names when it names a run: `RUN@latest` (its newest
/// checkpoint), `RUN@best` (the checkpoint of its best eval, by `[checkpoint] keep_best` or else
/// `eval.loss`), or a run directory itself (its newest checkpoint). Any other path is returned
/// as it is.
pub fn resolve_model(path: &Path) -> Result<PathBuf> {
    let text = path.to_string_lossy();
    let (run, which) = match text.rsplit_once('@') {
        Some((run, w @ ("best" | "latest"))) if !path.exists() => (PathBuf::from(run), w),
        _ if path.is_dir()
            && !path.join("config.json").is_file()
            && !path.join("state.json").is_file()
            && crate::run::listing::is_run_dir(path) =>
        {
            (path.to_path_buf(), "latest")
        }
        _ => return Ok(path.to_path_buf()),
    };
    if !crate::run::listing::is_run_dir(&run) {
        return Err(Error::Config(format!(
            "`{}`: `{}` is not a run directory (no metrics.jsonl, no checkpoints/)",
            path.display(),
            run.display()
        )));
    }
    let checkpoints = crate::run::checkpoint::list(&run);
    let Some((_, newest)) = checkpoints.last().cloned() else {
        return Err(Error::Config(format!(
            "`{}`: the run {} has no checkpoint yet",
            path.display(),
            run.display()
        )));
    };
    if which == "latest" {
        return Ok(newest);
    }
    let info = crate::run::listing::read_run(&run)?;
    let (Some(metric), Some(best)) = (&info.key_metric, info.best) else {
        return Err(Error::Config(format!(
            "`{}`: the run logged no eval metric, so it has no best checkpoint; use {}@latest",
            path.display(),
            run.display()
        )));
    };
    checkpoints
        .iter()
        .find(|(s, _)| *s == best.step)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            let kept: Vec<String> = checkpoints.iter().map(|(s, _)| format!("step-{s}")).collect();
            Error::Config(format!(
                "`{}`: the best {metric} ({:.4}) was at step {}, whose checkpoint was not kept (kept: {}); set `[checkpoint] keep_best = \"{metric}\"` to keep it",
                path.display(),
                best.value,
                best.step,
                kept.join(", ")
            ))
        })
}

/// Which kind of model `path` is, or why it is none.
pub fn model_path(path: &Path) -> Result<ModelPath> {
    if path.join("config.json").is_file() {
        return Ok(ModelPath::Hf);
    }
    if path.join("state.json").is_file() && path.join("recipe.toml").is_file() {
        return Ok(ModelPath::Checkpoint);
    }
    if path.is_dir() {
        return Err(Error::Config(format!(
            "`{}` is a directory but not a model: expected a HuggingFace model directory (config.json), a checkpoint directory (state.json, recipe.toml) or a run directory (its newest checkpoint; RUN@best, RUN@latest)",
            path.display()
        )));
    }
    if path.exists() {
        return Ok(ModelPath::Recipe);
    }
    Err(Error::Config(format!(
        "`{}` does not exist: expected a recipe file, a HuggingFace model directory (config.json) or a checkpoint directory (state.json, recipe.toml)",
        path.display()
    )))
}

/// The recipe behind any model path, with `sets` applied: the file itself, a checkpoint's
/// `recipe.toml`, or for a HuggingFace directory the recipe `[model] hf = DIR` with a declared
/// input of one sequence of 8 tokens (what `pzt plan` checks shapes on).
pub fn recipe_of(path: &Path, sets: &[String]) -> Result<Recipe> {
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
            let resolved = crate::recipe::resolve::resolve_text(&path.join(HF_RECIPE), text, sets)
                .map_err(|(s, d)| crate::recipe::recipe_error(&s, d))?;
            Recipe::decode(resolved)
        }
    }
}

/// The name of the recipe `recipe_of` makes for a HuggingFace directory (shown in messages;
/// no such file is written).
pub const HF_RECIPE: &str = "(hf-model).toml";

/// Loads `path`: an HF model directory (config.json), a run checkpoint directory
/// (state.json + recipe.toml), or a recipe file.
pub fn load(
    path: &Path,
    registry: &Registry,
    dtype: Option<Kind>,
    device: Device,
) -> Result<Loaded> {
    load_with(path, &[], registry, dtype, device)
}

/// [`load`] with `--set` edits applied to the model's recipe (a HuggingFace directory is then
/// loaded through the recipe `recipe_of` makes for it).
pub fn load_with(
    path: &Path,
    sets: &[String],
    registry: &Registry,
    dtype: Option<Kind>,
    device: Device,
) -> Result<Loaded> {
    let path = &resolve_model(path)?;
    let kind = model_path(path)?;
    if kind == ModelPath::Hf && sets.is_empty() {
        let m = crate::models::hf::load(path, dtype, device)?;
        let tj = path.join("tokenizer.json");
        let tokenizer = if tj.is_file() {
            Some(Tokenizer::load(&tj.display().to_string(), Path::new(""))?)
        } else {
            None
        };
        return Ok(Loaded {
            chat_template: tokenizer.as_ref().and_then(|t| t.config().chat_template),
            tree: m.tree,
            tokenizer_path: tokenizer.as_ref().map(|_| tj.clone()),
            tokenizer,
            eos: m.arch.eos.clone(),
            axes: LmAxes::default(),
            hf_dir: Some(path.to_path_buf()),
        });
    }
    let m = recipe_model(recipe_of(path, sets)?, registry, device, dtype)?;
    if kind == ModelPath::Checkpoint {
        crate::run::checkpoint::load_model(path, &m.tree)?;
    }
    Ok(m)
}

/// Parses `--tokens "1 2 3"` (spaces or commas).
pub fn parse_tokens(s: &str) -> Result<Vec<i64>> {
    let v: std::result::Result<Vec<i64>, _> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<i64>())
        .collect();
    match v {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(Error::Config("--tokens: no token ids given".into())),
        Err(e) => Err(Error::Config(format!(
            "--tokens: expected integers separated by spaces: {e}"
        ))),
    }
}
