//! Writes a model tree back as a recipe `[model]` table, so that recipe -> tree -> TOML -> tree
//! gives the same tree and the same parameter labels.

use crate::base::Result;
use crate::tree::{ChildLayout, Node};

/// The layer table of `node` at `path` (labels that differ from `<path>.<name>` are written
/// under `params`).
pub fn layer_table(node: &Node, path: &[String]) -> Result<toml::Table> {
    let mut t = toml::Table::new();
    t.insert("type".into(), toml::Value::String(node.kind().to_string()));
    for (k, v) in node.layer().config()? {
        t.insert(k, v);
    }
    let mut labels = toml::Table::new();
    for (name, e) in node.param_entries() {
        let mut p = path.to_vec();
        p.push(name.clone());
        if e.label() != p.join(".") {
            labels.insert(name.clone(), toml::Value::String(e.label().to_string()));
        }
    }
    if !labels.is_empty() {
        t.insert("params".into(), toml::Value::Table(labels));
    }
    let layout = node.layer().child_layout();
    let ordered = matches!(layout, ChildLayout::Sequence { .. });
    let children = node.children();
    let child_path = |n: &str| {
        let mut p = path.to_vec();
        p.push(n.to_string());
        p
    };
    if children.is_empty() {
        if ordered {
            t.insert("layers".into(), toml::Value::Array(vec![]));
        }
        return Ok(t);
    }
    let numeric = children
        .iter()
        .enumerate()
        .all(|(i, (n, _))| *n == i.to_string());
    if ordered && numeric {
        let mut items = vec![];
        for (n, c) in children {
            items.push(toml::Value::Table(layer_table(c, &child_path(n))?));
        }
        t.insert("layers".into(), toml::Value::Array(items));
    } else if matches!(layout, ChildLayout::Slots { .. }) {
        for (n, c) in children {
            t.insert(
                n.clone(),
                toml::Value::Table(layer_table(c, &child_path(n))?),
            );
        }
    } else {
        let mut ct = toml::Table::new();
        for (n, c) in children {
            ct.insert(
                n.clone(),
                toml::Value::Table(layer_table(c, &child_path(n))?),
            );
        }
        t.insert("children".into(), toml::Value::Table(ct));
    }
    Ok(t)
}

/// The whole model as TOML text of a `[model]` section.
pub fn model_toml(node: &Node) -> Result<String> {
    let mut root = toml::Table::new();
    root.insert("model".into(), toml::Value::Table(layer_table(node, &[])?));
    toml::to_string(&root).map_err(|e| crate::Error::Config(format!("cannot write TOML: {e}")))
}
