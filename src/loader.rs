//! Loading a model for `pzt logits`, `pzt generate`, `pzt export` and `pzt show`: a
//! HuggingFace model directory as it is ([`load_hf`]), or a model a recipe declares
//! ([`load_spec`]; the recipe layer gives its [`ModelLoad`]). Which a MODEL argument names is
//! [`crate::run::model_path`]'s to say.

use crate::base::{Error, Result};
use crate::data::tokenizer::Tokenizer;
use crate::models::generate::LmAxes;
use crate::spec::ModelLoad;
use crate::tree::{Builder, Node};
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
    /// What a user should know about the load (for the commands to print).
    pub notes: Vec<String>,
}

/// Loads a model declared by a recipe (its [`ModelLoad`]), with parameters seeded on `device`
/// in `dtype` (default: the recipe's).
pub fn load_spec(m: &ModelLoad, device: Device, dtype: Option<Kind>) -> Result<Loaded> {
    let tok = match &m.data {
        Some(d) => d.load_tokenizer(&m.base_dir)?,
        None => None,
    };
    let axes = m.input.as_ref().map(LmAxes::of).unwrap_or_default();
    let b = Builder::new(m.seed)
        .on(device)
        .dtype(dtype.unwrap_or(m.param_dtype));
    let tree = m.model.build(&m.registry, &b)?;
    let eos = tok.as_ref().map(|t| vec![t.eos_id()]).unwrap_or_default();
    Ok(Loaded {
        chat_template: chat_template_of(m.data.as_ref(), &m.base_dir, tok.as_ref())?,
        tree,
        tokenizer_path: tok
            .as_ref()
            .and_then(Tokenizer::path)
            .map(Path::to_path_buf),
        tokenizer: tok,
        eos,
        axes,
        hf_dir: m.hf_dir.clone(),
        notes: vec![],
    })
}

fn chat_template_of(
    data: Option<&crate::data::spec::DataSpec>,
    base: &Path,
    tok: Option<&Tokenizer>,
) -> Result<Option<String>> {
    if let Some(f) = data.and_then(|d| d.chat_template()) {
        return crate::base::files::read_small_file(&base.join(f)).map(Some);
    }
    Ok(tok.and_then(|t| t.config().chat_template))
}

/// Loads the Hugging Face model directory `path` as it is: its weights (in `dtype`, default
/// the checkpoint's), its tokenizer and chat template when it has them.
pub fn load_hf(path: &Path, dtype: Option<Kind>, device: Device) -> Result<Loaded> {
    let m = crate::models::hf::load(path, dtype, device)?;
    let tj = path.join("tokenizer.json");
    let tokenizer = if tj.is_file() {
        Some(Tokenizer::load(&tj.display().to_string(), Path::new(""))?)
    } else {
        None
    };
    Ok(Loaded {
        chat_template: tokenizer.as_ref().and_then(|t| t.config().chat_template),
        tree: m.tree,
        tokenizer_path: tokenizer.as_ref().map(|_| tj.clone()),
        tokenizer,
        eos: m.arch.eos.clone(),
        axes: LmAxes::default(),
        hf_dir: Some(path.to_path_buf()),
        notes: m.notes,
    })
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
