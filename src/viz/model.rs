//! A model tree as the HTML viewer's JSON: every node's child name, kind, path and axes summary;
//! every parameter's shape, axis names, dtype, count, whether it trains, which parameter it is
//! shared with, its summary statistics and (within the page's budget) its values; the matches of
//! a selector, for `pzt select --html` (Penzai's `show_selection`).

use super::array::{stats, ArrayView};
use crate::base::dtype::name as kind_name;
use crate::base::Result;
use crate::params::ParamEntry;
use crate::tree::Node;
use serde_json::{json, Value as Json};
use std::collections::{HashMap, HashSet};

/// The most values embedded for one array (a larger one shows its leading block).
pub const MAX_ARRAY_VALUES: i64 = 65_536;
/// The most values a page embeds in all (later arrays get statistics only).
pub const MAX_PAGE_VALUES: i64 = 4 << 20;

/// What a model page shows besides the tree.
#[derive(Debug, Clone, Default)]
pub struct ModelView {
    /// What the model was read from (a recipe, a directory).
    pub source: String,
    /// A selector and the paths it matched (dotted, `""` for the root).
    pub selection: Option<(String, Vec<String>)>,
    /// Token strings by id, for axes named `vocab` (and `seq` of arrays).
    pub vocab: Option<Vec<String>>,
}

struct Walk<'a> {
    view: &'a ModelView,
    selected: HashSet<&'a str>,
    /// The first owner (`path.name`) of each parameter label.
    owners: HashMap<String, String>,
    arrays: Vec<Json>,
    budget: i64,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A quantized weight's format (`nf4`, `int8`), for its badge: its statistics and array are
/// those of its dequantized values.
fn quantized_format(e: &ParamEntry) -> Option<&'static str> {
    match e {
        ParamEntry::Quantized(q) => Some(q.format()),
        ParamEntry::Slot(s) => s.quantized,
        _ => None,
    }
}

impl Walk<'_> {
    fn param(&mut self, node: &Node, path: &str, name: &str, e: &ParamEntry) -> Result<Json> {
        let shape = e.shape();
        let mut axes = node.layer().param_axes(name);
        if axes.len() != shape.len() {
            axes = (0..shape.len()).map(|i| format!("dim{i}")).collect();
        }
        let at = join(path, name);
        let status = match e {
            ParamEntry::Bound(p) if p.trainable() => "trainable",
            ParamEntry::Bound(_) | ParamEntry::Frozen(_) | ParamEntry::Quantized(_) => "frozen",
            ParamEntry::Slot(_) => "slot",
        };
        let mut j = json!({
            "name": name, "label": e.label(), "path": at, "shape": shape, "axes": axes,
            "dtype": kind_name(e.kind()), "count": shape.iter().product::<i64>(),
            "status": status, "shared_with": null, "stats": null, "summary": null, "array": null,
            "quantized": quantized_format(e),
        });
        if let Some(first) = self.owners.get(e.label()) {
            j["shared_with"] = json!(first);
            return Ok(j);
        }
        self.owners.insert(e.label().to_string(), at.clone());
        let ParamEntry::Slot(_) = e else {
            let t = e.value()?;
            if crate::backend::is_meta(&t) {
                return Ok(j);
            }
            let s = stats(&t)?;
            j["stats"] = s.to_json();
            j["summary"] = json!(s.line());
            if self.budget > 0 {
                let mut v = ArrayView::new(&at, &t, &axes, MAX_ARRAY_VALUES.min(self.budget))?;
                if let Some(tokens) = &self.view.vocab {
                    v = v.label("vocab", tokens.clone());
                }
                self.budget -= v.values.len() as i64;
                j["array"] = json!(self.arrays.len());
                self.arrays.push(v.to_json());
            }
            return Ok(j);
        };
        Ok(j)
    }

    fn node(&mut self, n: &Node, path: &str, name: Option<&str>) -> Result<Json> {
        let mut params = vec![];
        for (pn, e) in n.param_entries() {
            params.push(self.param(n, path, pn, e)?);
        }
        let state: Vec<Json> = n
            .state_entries()
            .iter()
            .map(|(sn, e)| json!({ "name": sn, "label": e.label() }))
            .collect();
        let mut children = vec![];
        for (cn, c) in n.children() {
            children.push(self.node(c, &join(path, cn), Some(cn))?);
        }
        Ok(json!({
            "name": name, "path": path, "kind": n.kind(), "summary": n.layer().summary(),
            "selected": self.selected.contains(path), "params": params, "state": state,
            "children": children,
        }))
    }
}

/// The page data for `tree`.
pub fn model_data(tree: &Node, view: &ModelView) -> Result<Json> {
    let mut w = Walk {
        view,
        selected: view
            .selection
            .as_ref()
            .map(|(_, p)| p.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        owners: HashMap::new(),
        arrays: vec![],
        budget: MAX_PAGE_VALUES,
    };
    let root = w.node(tree, "", None)?;
    let counts = crate::assembly::memory::count_params(tree);
    Ok(json!({
        "page": if view.selection.is_some() { "selection" } else { "model" },
        "source": view.source,
        "selector": view.selection.as_ref().map(|(s, _)| s),
        "matches": view.selection.as_ref().map(|(_, p)| p.len()),
        "parameters": { "total": counts.total, "trainable": counts.trainable, "frozen": counts.frozen },
        "tree": root,
        "arrays": w.arrays,
    }))
}
