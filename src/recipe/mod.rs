//! Recipes: TOML files that declare a run and its model.
//!
//! - [`resolve`]: read the file, merge `include`s, apply `--set` (every value keeps its
//!   location, see [`raw`]).
//! - [`Recipe::load`]: decode the sections strictly (`[run]`, `[model]`, `[[patch]]`).
//! - [`plan::Plan`]: build the model tree (shapes only, or with values), apply patches, infer
//!   shapes on the meta device, count parameters and estimate memory.
//!
//! Every mistake is an [`Error::Recipe`] whose message names the file, line and column, the key
//! path and what was expected.

pub mod decode;
pub mod diagnose;
pub mod emit;
pub mod model;
pub mod patch;
pub mod plan;
pub mod raw;
pub mod resolve;
pub mod source;

use crate::base::{Error, Result};
use crate::layers::Axes;
use decode::{check_keys, join, key_loc, opt_axes, opt_int, opt_str, table};
use raw::{RNode, RVal};
use source::{did_you_mean, Diagnostic, Loc, Sources};
use std::path::{Path, PathBuf};

/// Top-level keys a recipe may have.
pub const SECTIONS: [&str; 8] = [
    "run",
    "model",
    "patch",
    "include",
    "data",
    "train",
    "optim",
    "checkpoint",
];
/// Sections that later versions of pzt read.
const LATER: [&str; 1] = ["strategy"];

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

/// The declared input of the model (`[model.input]`): named axes and a dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub axes: Axes,
    pub dtype: tch::Kind,
}

/// What a patch does to each selected subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Wrap,
    InsertBefore,
    InsertAfter,
    Remove,
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
    /// The `[model]` layer table (without `input` and `dtype`).
    pub model: RNode,
    pub input: Option<InputSpec>,
    /// Parameter dtype (`[model] dtype`, default float32).
    pub param_dtype: tch::Kind,
    pub patches: Vec<PatchSpec>,
    /// `[data]`.
    pub data: Option<crate::data::sources::DataConfig>,
    /// `[train]`.
    pub train: Option<crate::train::config::TrainConfig>,
    /// `[optim]`.
    pub optim: Option<crate::train::config::OptimConfig>,
    /// `[checkpoint]` (defaults when absent).
    pub checkpoint: crate::train::config::CheckpointConfig,
}

/// The decoded training sections.
type TrainingSections = (
    Option<crate::data::sources::DataConfig>,
    Option<crate::train::config::TrainConfig>,
    Option<crate::train::config::OptimConfig>,
    crate::train::config::CheckpointConfig,
);

fn section<T: serde::de::DeserializeOwned>(
    root: &raw::RTable,
    name: &str,
    validate: impl Fn(&T) -> Result<()>,
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
    let what = format!("[{name}]");
    let v: T = crate::tree::registry::decode_config(&what, &cfg)
        .map_err(|err| diagnose::config_error(err, t, e.node.loc.clone(), &kp, &[]))?;
    validate(&v).map_err(|err| diagnose::config_error(err, t, e.node.loc.clone(), &kp, &[]))?;
    Ok(Some(v))
}

/// Renders a diagnostic against the sources into an [`Error::Recipe`].
pub fn recipe_error(sources: &Sources, d: Diagnostic) -> Error {
    Error::Recipe(d.render(sources))
}

/// An input dtype: the float kinds, int64 or int32.
fn parse_kind(s: &str) -> Option<tch::Kind> {
    crate::base::dtype::from_name(s).filter(|k| {
        crate::base::dtype::is_float(*k) || matches!(k, tch::Kind::Int64 | tch::Kind::Int)
    })
}

impl Recipe {
    /// Reads, resolves and decodes a recipe file.
    pub fn load(path: &Path, sets: &[String]) -> Result<Recipe> {
        let resolved = resolve::resolve(path, sets).map_err(|(s, d)| recipe_error(&s, d))?;
        Self::decode(resolved)
    }

    /// Decodes a resolved raw recipe.
    pub fn decode(resolved: resolve::Resolved) -> Result<Recipe> {
        let r = Self::decode_inner(&resolved);
        let (run, model, input, param_dtype, patches) =
            r.map_err(|d| recipe_error(&resolved.sources, d))?;
        let (data, train, optim, checkpoint) =
            Self::decode_training(&resolved).map_err(|d| recipe_error(&resolved.sources, d))?;
        Ok(Recipe {
            resolved,
            run,
            model,
            input,
            param_dtype,
            patches,
            data,
            train,
            optim,
            checkpoint,
        })
    }

    fn decode_training(res: &resolve::Resolved) -> Result<TrainingSections, Diagnostic> {
        let root = table(&res.root, &[], "a recipe")?;
        let data = section(root, "data", |d: &crate::data::sources::DataConfig| {
            d.validate()
        })?;
        let train = section(root, "train", |t: &crate::train::config::TrainConfig| {
            t.validate()
        })?;
        let optim = section(root, "optim", |o: &crate::train::config::OptimConfig| {
            o.validate()
        })?;
        let checkpoint = section(
            root,
            "checkpoint",
            |c: &crate::train::config::CheckpointConfig| c.validate(),
        )?
        .unwrap_or_default();
        Ok((data, train, optim, checkpoint))
    }

    #[allow(clippy::type_complexity)]
    fn decode_inner(
        res: &resolve::Resolved,
    ) -> Result<
        (
            RunSection,
            RNode,
            Option<InputSpec>,
            tch::Kind,
            Vec<PatchSpec>,
        ),
        Diagnostic,
    > {
        let root = table(&res.root, &[], "a recipe")?;
        for (k, e) in root {
            if LATER.contains(&k.as_str()) {
                return Err(Diagnostic::new(format!(
                    "section `[{k}]` is not supported by this version of pzt yet"
                ))
                .at(e.key_loc.clone())
                .key(k.clone())
                .note(format!("supported sections: {}", SECTIONS.join(", "))));
            }
        }
        check_keys(root, &SECTIONS, &[], "a recipe")?;
        // [run]
        let stem = res
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let run = match root.get("run") {
            None => RunSection {
                name: stem.clone(),
                seed: 0,
                out_dir: PathBuf::from("runs").join(&stem),
            },
            Some(e) => {
                let kp = vec!["run".to_string()];
                let t = table(&e.node, &kp, "`[run]`")?;
                check_keys(t, &["name", "seed", "out_dir"], &kp, "`[run]`")?;
                let name = opt_str(t, "name", &kp)?.unwrap_or(stem);
                if name.is_empty() || name.contains('/') {
                    return Err(Diagnostic::new(format!(
                        "run name `{name}` must be non-empty and without `/`"
                    ))
                    .at(key_loc(t, "name"))
                    .key("run.name"));
                }
                let seed = match opt_int(t, "seed", &kp)? {
                    Some(s) if s >= 0 => s as u64,
                    Some(s) => {
                        return Err(Diagnostic::new(format!(
                            "`seed` must be non-negative, got {s}"
                        ))
                        .at(key_loc(t, "seed"))
                        .key("run.seed"))
                    }
                    None => 0,
                };
                let out_dir = opt_str(t, "out_dir", &kp)?
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("runs").join(&name));
                RunSection {
                    name,
                    seed,
                    out_dir,
                }
            }
        };
        // [model]
        let Some(me) = root.get("model") else {
            return Err(
                Diagnostic::new("the recipe has no `[model]` section").at(res.root.loc.clone().or(
                    Some(Loc {
                        file: 0,
                        span: 0..0,
                    }),
                )),
            );
        };
        let kp = vec!["model".to_string()];
        let mt = table(&me.node, &kp, "`[model]`")?;
        let mut input = None;
        if let Some(ie) = mt.get("input") {
            let ikp = vec!["model".to_string(), "input".to_string()];
            let it = table(&ie.node, &ikp, "`[model.input]`")?;
            check_keys(it, &["axes", "dtype"], &ikp, "`[model.input]`")?;
            let axes = opt_axes(it, "axes", &ikp)?.ok_or_else(|| {
                Diagnostic::new("`[model.input]` needs `axes = { name = size, ... }`")
                    .at(ie.node.loc.clone())
                    .key(join(&ikp))
            })?;
            let dtype = match opt_str(it, "dtype", &ikp)? {
                None => tch::Kind::Float,
                Some(d) => parse_kind(&d).ok_or_else(|| {
                    Diagnostic::new(format!("unknown dtype `{d}`"))
                        .at(key_loc(it, "dtype"))
                        .key("model.input.dtype")
                        .note("expected one of: float32, float64, bfloat16, float16, int64, int32")
                })?,
            };
            input = Some(InputSpec { axes, dtype });
        }
        let param_dtype = match opt_str(mt, "dtype", &kp)? {
            None => tch::Kind::Float,
            Some(d) => match parse_kind(&d) {
                Some(k) if crate::base::dtype::is_float(k) => k,
                _ => {
                    return Err(Diagnostic::new(format!("unknown parameter dtype `{d}`"))
                        .at(key_loc(mt, "dtype"))
                        .key("model.dtype")
                        .note("expected one of: float32, float64, bfloat16, float16"))
                }
            },
        };
        let mut model = me.node.clone();
        if let RVal::Table(t) = &mut model.val {
            t.shift_remove("input");
            t.shift_remove("dtype");
        }
        // [[patch]]
        let mut patches = vec![];
        if let Some(pe) = root.get("patch") {
            let items = match &pe.node.val {
                RVal::Array(a) => a.clone(),
                RVal::Table(_) => vec![pe.node.clone()],
                _ => {
                    return Err(
                        Diagnostic::new("`patch` must be an array of tables: [[patch]]")
                            .at(pe.key_loc.clone())
                            .key("patch"),
                    )
                }
            };
            for (i, item) in items.iter().enumerate() {
                let pkp = vec!["patch".to_string(), i.to_string()];
                let t = table(item, &pkp, "a `[[patch]]`")?;
                check_keys(
                    t,
                    &["select", "action", "with", "expect_count"],
                    &pkp,
                    "a `[[patch]]`",
                )?;
                let select = opt_str(t, "select", &pkp)?.ok_or_else(|| {
                    Diagnostic::new("a `[[patch]]` needs `select = \"<selector>\"`")
                        .at(item.loc.clone())
                        .key(join(&pkp))
                })?;
                const ACTIONS: [&str; 5] =
                    ["replace", "wrap", "insert_before", "insert_after", "remove"];
                let action_s = opt_str(t, "action", &pkp)?.ok_or_else(|| {
                    Diagnostic::new("a `[[patch]]` needs `action`")
                        .at(item.loc.clone())
                        .key(join(&pkp))
                        .note(format!("expected one of: {}", ACTIONS.join(", ")))
                })?;
                let action = match action_s.as_str() {
                    "replace" => Action::Replace,
                    "wrap" => Action::Wrap,
                    "insert_before" => Action::InsertBefore,
                    "insert_after" => Action::InsertAfter,
                    "remove" => Action::Remove,
                    other => {
                        let mut d = Diagnostic::new(format!("unknown patch action `{other}`"))
                            .at(t.get("action").and_then(|e| e.node.loc.clone()))
                            .key(format!("patch.{i}.action"));
                        if let Some(s) = did_you_mean(other, ACTIONS) {
                            d = d.label(format!("did you mean `{s}`?"));
                        }
                        return Err(d.note(format!("expected one of: {}", ACTIONS.join(", "))));
                    }
                };
                let with = t.get("with").map(|e| e.node.clone());
                if action == Action::Remove && with.is_some() {
                    return Err(Diagnostic::new("`remove` takes no `with`")
                        .at(key_loc(t, "with"))
                        .key(format!("patch.{i}.with")));
                }
                if action != Action::Remove && with.is_none() {
                    return Err(Diagnostic::new(format!(
                        "`{action_s}` needs `with = {{ type = ... }}`"
                    ))
                    .at(item.loc.clone())
                    .key(join(&pkp)));
                }
                let expect_count = match opt_int(t, "expect_count", &pkp)? {
                    Some(n) if n >= 0 => Some(n as usize),
                    Some(n) => {
                        return Err(Diagnostic::new(format!(
                            "`expect_count` must be non-negative, got {n}"
                        ))
                        .at(key_loc(t, "expect_count"))
                        .key(format!("patch.{i}.expect_count")))
                    }
                    None => None,
                };
                patches.push(PatchSpec {
                    index: i,
                    select,
                    select_loc: t.get("select").and_then(|e| e.node.loc.clone()),
                    action,
                    with,
                    expect_count,
                    loc: item.loc.clone(),
                });
            }
        }
        Ok((run, model, input, param_dtype, patches))
    }
}
