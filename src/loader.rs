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

/// Loads `path`: an HF model directory (config.json), a run checkpoint directory
/// (state.json + recipe.toml), or a recipe file.
pub fn load(
    path: &Path,
    registry: &Registry,
    dtype: Option<Kind>,
    device: Device,
) -> Result<Loaded> {
    if path.join("config.json").is_file() {
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
    if path.join("state.json").is_file() && path.join("recipe.toml").is_file() {
        let m = recipe_model(
            Recipe::load(&path.join("recipe.toml"), &[])?,
            registry,
            device,
            dtype,
        )?;
        crate::store::load_model(path, &m.tree)?;
        return Ok(m);
    }
    if path.is_file() {
        return recipe_model(Recipe::load(path, &[])?, registry, device, dtype);
    }
    Err(Error::Config(format!(
        "`{}` is not a model: expected a HuggingFace model directory (config.json), a checkpoint directory (state.json, recipe.toml) or a recipe file",
        path.display()
    )))
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
