//! Re-running an isolated submodel (`pzt replay DIR`): rebuild it from `submodel.toml` (with
//! `--set` edits, and `[[patch]]`es from a file, applied as to any recipe), give it its
//! parameters by label (a parameter a patch added keeps its seeded initialization), set its
//! state variables to what they held before the recorded call, run it on the saved input and
//! side inputs, and compare with the saved output and state.

use super::isolate::state_key;
use super::values::{max_abs_diff, unflatten, unflatten_side};
use crate::base::{Error, Result};
use crate::named::{NamedTensor, Value};
use crate::params::{ParamEntry, Parameter, StateEntry};
use crate::tree::Node;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The result of a replay.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub path: String,
    pub kind: String,
    pub input: Value,
    pub output: Value,
    pub saved_output: Value,
    /// The largest absolute difference to the saved output (None when its structure or shape
    /// changed).
    pub max_abs_diff: Option<f64>,
    /// The same over the state variables after the call (None when there are none to compare).
    pub state_max_abs_diff: Option<f64>,
    /// Parameters given their isolated values, and parameters the edits added.
    pub loaded: usize,
    pub added: usize,
}

fn bad(dir: &Path, what: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "{}: not an isolated submodel ({what}: {why})",
        dir.display()
    ))
}

fn with_parameters(
    tree: &Node,
    values: &BTreeMap<String, NamedTensor>,
    file: &Path,
) -> Result<(Node, usize, usize)> {
    let mut made: HashMap<String, Parameter> = HashMap::new();
    let (mut loaded, mut added) = (0, 0);
    let tree = tree.map_entries(
        &mut |p| {
            let label = p.label().to_string();
            if let Some(q) = made.get(&label) {
                return Ok(ParamEntry::Bound(q.clone()));
            }
            let Some(v) = values.get(&label) else {
                added += 1;
                return Ok(p.clone());
            };
            if v.tensor().size() != p.shape() {
                return Err(Error::bad_file(
                    file.display(),
                    format!(
                        "parameter `{label}` has shape {:?}, the (edited) submodel wants {:?}",
                        v.tensor().size(),
                        p.shape()
                    ),
                ));
            }
            // A value of another dtype would be converted silently: an integer tensor where a
            // float parameter belongs is a damaged file, not a value.
            if v.tensor().kind() != p.kind() {
                return Err(Error::bad_file(
                    file.display(),
                    format!(
                        "parameter `{label}` is {:?}, the submodel's parameter is {:?}",
                        v.tensor().kind(),
                        p.kind()
                    ),
                ));
            }
            let q = Parameter::with_trainable(label.clone(), v.tensor().shallow_clone(), false);
            made.insert(label, q.clone());
            loaded += 1;
            Ok(ParamEntry::Bound(q))
        },
        &mut |s| Ok(s.clone()),
    )?;
    Ok((tree, loaded, added))
}

fn saved_states(
    s: &Json,
    arrays: &BTreeMap<String, NamedTensor>,
    prefix: &str,
) -> Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    for (i, e) in s.as_array().into_iter().flatten().enumerate() {
        let (Some(label), Some(v)) = (e.get("at").and_then(Json::as_str), e.get("value")) else {
            continue;
        };
        if !v.is_null() {
            out.insert(
                label.to_string(),
                unflatten(&format!("{prefix}.{i}"), v, arrays)?,
            );
        }
    }
    Ok(out)
}

/// Gives the submodel's state variables their saved values from before the call.
fn set_states(tree: &Node, before: &HashMap<String, Value>, dir: &Path) -> Result<()> {
    let mut err = None;
    tree.walk(&mut |path, n| {
        for (field, s) in n.state_entries() {
            let at = state_key(path, field);
            if let StateEntry::Var(v) = s {
                v.set(before.get(&at).cloned());
            } else if err.is_none() && before.contains_key(&at) {
                err = Some(bad(
                    dir,
                    "io.safetensors",
                    format!("state `{at}` cannot be set"),
                ));
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The submodel (edited or not) must run on the saved input; when it does not, the edits or the
/// files are at fault: said so, with the layer and shapes.
fn cannot_run(dir: &Path, edited: bool, input: &Value, e: Error) -> Error {
    Error::Config(format!(
        "{}: the {}submodel cannot run on the saved input ({}): {e}",
        dir.display(),
        if edited { "edited " } else { "" },
        crate::probe::values::describe(input)
    ))
}

/// Replays the isolated submodel in `dir`, built by `build` (from its `submodel.toml`, with
/// `--set` or `--patch` edits when `edited`; called once `dir` is known to hold an isolated
/// submodel).
pub fn replay(dir: &Path, edited: bool, build: impl FnOnce() -> Result<Node>) -> Result<Replayed> {
    let info_text = crate::base::files::read_small_file(&dir.join("isolate.json"))
        .map_err(|e| bad(dir, "isolate.json", e))?;
    let info: Json = serde_json::from_str(&info_text).map_err(|e| bad(dir, "isolate.json", e))?;
    if info.get("format").and_then(Json::as_u64) != Some(1) {
        return Err(bad(dir, "isolate.json", "no `format = 1`"));
    }
    let path = info
        .get("path")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let built = build()?;
    let pfile = dir.join("parameters.safetensors");
    let (params, _) = crate::run::checkpoint::arrays::read(&pfile)?;
    let params: BTreeMap<String, NamedTensor> = params.into_iter().collect();
    let (tree, loaded, added) = with_parameters(&built, &params, &pfile)?;
    let (arrays, meta) = crate::run::checkpoint::arrays::read(&dir.join("io.safetensors"))?;
    let arrays: BTreeMap<String, NamedTensor> = arrays.into_iter().collect();
    let st: Json = meta
        .get("structure")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad(dir, "io.safetensors", "no `structure` metadata"))?;
    let input = unflatten("input", &st["input"], &arrays)?;
    let saved_output = unflatten("output", &st["output"], &arrays)?;
    let side = unflatten_side(&st["side"], &arrays)?;
    let before = saved_states(&st["before"], &arrays, "before")?;
    let after = saved_states(&st["after"], &arrays, "after")?;
    set_states(&tree, &before, dir)?;
    let _ng = tch::no_grad_guard();
    let output = tree
        .forward(input.clone(), &side)
        .map_err(|e| cannot_run(dir, edited, &input, e))?;
    let max = max_abs_diff(&output, &saved_output)?;
    let mut state_max: Option<f64> = None;
    let mut state_err = None;
    tree.walk(&mut |path, n| {
        for (field, s) in n.state_entries() {
            if let (Some(want), Ok(Some(got))) = (after.get(&state_key(path, field)), s.get()) {
                match max_abs_diff(&got, want) {
                    Ok(d) => {
                        state_max = Some(state_max.unwrap_or(0.0).max(d.unwrap_or(f64::INFINITY)))
                    }
                    Err(e) => state_err = Some(e),
                }
            }
        }
    });
    if let Some(e) = state_err {
        return Err(e);
    }
    Ok(Replayed {
        kind: tree.kind().to_string(),
        path,
        input,
        output,
        saved_output,
        max_abs_diff: max,
        state_max_abs_diff: state_max,
        loaded,
        added,
    })
}
