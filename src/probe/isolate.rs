//! Isolating one submodel (Penzai's `call_and_extract_submodel` / `IsolatedSubmodel`): run the
//! model once with a recorder around the selected layer, and keep that layer, what it was given
//! (input and side inputs), what it returned, and its state variables before and after.
//!
//! On disk (`pzt isolate --out DIR`):
//! - `submodel.toml`: a recipe whose `[model]` is the submodel, parameters under their labels
//!   in the whole model;
//! - `parameters.safetensors`: those parameters' values, by label;
//! - `io.safetensors`: `input`, `output`, `side.<key>`, `before.<i>` and `after.<i>` arrays
//!   (tuples as `name.0`, `name.1`, ...), their structure in the metadata entry `structure`
//!   (state variables by where they sit in the submodel: node path and field);
//! - `isolate.json`: what was isolated (model, path, kind, tokens) and the state labels.
//!
//! The recorder keeps the first call of the layer (a layer shared by two places runs twice).

use super::values::{deep_copy, flatten, flatten_side};
use crate::base::{Error, Result};
use crate::named::{NamedTensor, SideInputs, Value};
use crate::tree::{ChildLayout, Layer, Node, Selection};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What one call of the isolated layer saw and did.
#[derive(Debug, Clone)]
pub struct Record {
    pub input: Value,
    pub side: SideInputs,
    pub output: Value,
    /// `(where, value)` of every state variable in the submodel (`where`: the node's path in
    /// the submodel and the field, dotted), before and after the call.
    pub before: Vec<(String, Option<Value>)>,
    pub after: Vec<(String, Option<Value>)>,
}

/// An isolated submodel and its recorded call.
#[derive(Debug, Clone)]
pub struct Isolated {
    /// The submodel's path in the model (`""` for the root).
    pub path: String,
    pub submodel: Node,
    pub record: Record,
}

#[derive(Debug, Clone, Default)]
struct Recorder {
    slot: Arc<Mutex<Option<Record>>>,
}

/// Where a state variable sits in a (sub)model: its node's path and its field, dotted.
pub fn state_key(path: &[String], field: &str) -> String {
    let mut p = path.to_vec();
    p.push(field.to_string());
    p.join(".")
}

fn states_of(n: &Node) -> Result<Vec<(String, Option<Value>)>> {
    let mut out = vec![];
    let mut err = None;
    n.walk(&mut |path, node| {
        for (field, s) in node.state_entries() {
            match s.get().and_then(|v| v.as_ref().map(deep_copy).transpose()) {
                Ok(v) => out.push((state_key(path, field), v)),
                Err(e) => err = err.take().or(Some(e)),
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl Layer for Recorder {
    fn kind(&self) -> &str {
        "IsolateRecorder"
    }
    fn config(&self) -> Result<toml::Table> {
        Ok(toml::Table::new())
    }
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["body"],
            wrap: Some("body"),
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let body = node.child("body")?;
        let before = states_of(body)?;
        let input = deep_copy(&x)?;
        let y = node.call_child("body", x, side)?;
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| Error::Config("isolate: the recorder's lock is poisoned".into()))?;
        if slot.is_none() {
            *slot = Some(Record {
                input,
                side: side.clone(),
                output: deep_copy(&y)?,
                before,
                after: states_of(body)?,
            });
        }
        Ok(y)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Runs `sel`'s model on `x` (no gradients) and isolates the one subtree `sel` selects.
pub fn isolate(sel: &Selection, x: NamedTensor, side: &SideInputs) -> Result<Isolated> {
    if sel.count() != 1 {
        return Err(Error::Select(format!(
            "isolate needs exactly one layer, and the selection matches {}{}",
            sel.count(),
            if sel.count() > 1 {
                format!(
                    " ({})",
                    sel.paths()
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        )));
    }
    let path = sel.paths().remove(0);
    let (_, submodel) = sel.get().remove(0);
    let submodel = submodel.clone();
    let rec = Recorder::default();
    let slot = rec.slot.clone();
    let rec = Arc::new(rec);
    let wired = sel.apply(|_, n| Ok(Node::from_arc(rec.clone()).with_child("body", n.clone())))?;
    let _ng = tch::no_grad_guard();
    wired.forward(x, side)?;
    let record = slot
        .lock()
        .map_err(|_| Error::Config("isolate: the recorder's lock is poisoned".into()))?
        .take()
        .ok_or_else(|| Error::Config(format!("isolate: the forward pass never ran `{path}`")))?;
    Ok(Isolated {
        path,
        submodel,
        record,
    })
}

fn states(
    prefix: &str,
    s: &[(String, Option<Value>)],
    out: &mut Vec<(String, NamedTensor)>,
) -> Json {
    Json::Array(
        s.iter()
            .enumerate()
            .map(|(i, (at, v))| {
                json!({
                    "at": at,
                    "value": v.as_ref().map(|v| flatten(&format!("{prefix}.{i}"), v, out)),
                })
            })
            .collect(),
    )
}

/// The files [`write`] puts in its directory.
pub const FILES: [&str; 4] = [
    "submodel.toml",
    "parameters.safetensors",
    "io.safetensors",
    "isolate.json",
];

/// Writes `iso` to `dir` (created; it must not hold an isolated submodel already), with
/// `about` (model, tokens, selector, ...) in `isolate.json`.
pub fn write(iso: &Isolated, dir: &Path, about: &BTreeMap<String, Json>) -> Result<()> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| Error::Io { path: p, source }
    };
    if dir.join("isolate.json").exists() {
        return Err(Error::Config(format!(
            "{} already holds an isolated submodel; choose another --out or remove it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut recipe = format!(
        "# The submodel `{}` isolated by `pzt isolate`; `pzt replay` rebuilds it from here.\n[run]\nname = \"isolated\"\nseed = 0\n\n",
        if iso.path.is_empty() { "<root>" } else { &iso.path }
    );
    recipe.push_str(&crate::tree::model_toml(&iso.submodel)?);
    let sub = dir.join("submodel.toml");
    std::fs::write(&sub, recipe).map_err(io(&sub))?;
    let params: Vec<(String, NamedTensor)> = iso
        .submodel
        .all_param_entries()
        .into_iter()
        .map(|(_, _, e)| Ok((e.label().to_string(), NamedTensor::wrap(e.value()?, &[])?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(vec![], |mut acc: Vec<(String, NamedTensor)>, (l, t)| {
            if !acc.iter().any(|(k, _)| *k == l) {
                acc.push((l, t));
            }
            acc
        });
    crate::run::checkpoint::arrays::write(
        &dir.join("parameters.safetensors"),
        &params,
        &BTreeMap::new(),
    )?;
    let r = &iso.record;
    let mut arrays = vec![];
    let structure = json!({
        "input": flatten("input", &r.input, &mut arrays),
        "output": flatten("output", &r.output, &mut arrays),
        "side": flatten_side(&r.side, &mut arrays),
        "before": states("before", &r.before, &mut arrays),
        "after": states("after", &r.after, &mut arrays),
    });
    let meta = BTreeMap::from([("structure".to_string(), structure.to_string())]);
    crate::run::checkpoint::arrays::write(&dir.join("io.safetensors"), &arrays, &meta)?;
    let mut j = serde_json::Map::new();
    j.insert("format".into(), json!(1));
    j.insert("path".into(), json!(iso.path));
    j.insert("kind".into(), json!(iso.submodel.kind()));
    j.insert("parameters".into(), json!(params.len()));
    for (k, v) in about {
        j.insert(k.clone(), v.clone());
    }
    let f = dir.join("isolate.json");
    let text = serde_json::to_string_pretty(&Json::Object(j)).unwrap_or_default();
    std::fs::write(&f, text).map_err(io(&f))
}
