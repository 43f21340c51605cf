//! The tree as TOML: kinds, configs, child names, parameter labels, shapes and dtypes (no
//! values), and back through a [`Registry`].

use super::{ChildLayout, Node, Registry};
use crate::base::{dtype, Error, Result};
use crate::params::{ParamEntry, ParameterSlot, StateEntry};

const RESERVED: [&str; 4] = ["type", "params", "states", "children"];

fn kind_from_name(s: &str) -> Result<tch::Kind> {
    dtype::from_name(s).ok_or_else(|| Error::Config(format!("unknown dtype `{s}`")))
}

/// How a tree is written as TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Everything the tree is made of but values: kinds, configs, parameter labels, shapes and
    /// dtypes, state labels, and the children in order as an array of named tables.
    /// [`Node::from_toml`] reads it back.
    Structure,
    /// A recipe layer table: children as `layers`, slot keys or `children`, as the kind takes
    /// them ([`super::ChildLayout`]), and parameter labels only where they differ from the
    /// tree path (a recipe derives shapes from the configs).
    Recipe,
}

impl Node {
    /// Serializes the structure (kinds, configs, children, parameter labels and shapes; no
    /// values) to a TOML table: `type`, the config keys, `params`, `states`, `children`.
    pub fn to_toml(&self) -> Result<toml::Table> {
        self.to_toml_as(Form::Structure)
    }

    /// Serializes the tree in the given form.
    pub fn to_toml_as(&self, form: Form) -> Result<toml::Table> {
        self.table(form, &mut vec![])
    }

    fn table(&self, form: Form, path: &mut Vec<String>) -> Result<toml::Table> {
        let mut t = toml::Table::new();
        t.insert("type".into(), toml::Value::String(self.kind().to_string()));
        for (k, v) in self.layer().config()? {
            if RESERVED.contains(&k.as_str()) {
                return Err(Error::Config(format!(
                    "layer kind `{}` uses the reserved config key `{k}`",
                    self.kind()
                )));
            }
            t.insert(k, v);
        }
        let params = match form {
            Form::Structure => self.structure_params(),
            Form::Recipe => self.explicit_labels(path),
        };
        if !params.is_empty() {
            t.insert("params".into(), toml::Value::Table(params));
        }
        if form == Form::Structure && !self.state_entries().is_empty() {
            let mut ss = toml::Table::new();
            for (n, s) in self.state_entries() {
                ss.insert(n.clone(), toml::Value::String(s.label().to_string()));
            }
            t.insert("states".into(), toml::Value::Table(ss));
        }
        let mut children = vec![];
        for (n, c) in self.children() {
            path.push(n.clone());
            let ct = c.table(form, path);
            path.pop();
            children.push((n.clone(), ct?));
        }
        match form {
            Form::Structure => {
                if !children.is_empty() {
                    // An array of named tables keeps the child order.
                    let cs = children
                        .into_iter()
                        .map(|(n, mut e)| {
                            e.insert("name".into(), toml::Value::String(n));
                            toml::Value::Table(e)
                        })
                        .collect();
                    t.insert("children".into(), toml::Value::Array(cs));
                }
            }
            Form::Recipe => self.recipe_children(&mut t, children),
        }
        Ok(t)
    }

    fn structure_params(&self) -> toml::Table {
        let mut ps = toml::Table::new();
        for (n, p) in self.param_entries() {
            let mut e = toml::Table::new();
            e.insert("label".into(), toml::Value::String(p.label().to_string()));
            e.insert(
                "shape".into(),
                toml::Value::Array(p.shape().into_iter().map(toml::Value::Integer).collect()),
            );
            e.insert(
                "dtype".into(),
                toml::Value::String(dtype::name(p.kind()).into()),
            );
            ps.insert(n.clone(), toml::Value::Table(e));
        }
        ps
    }

    /// `params = { name = "label" }` for the labels that are not `<path>.<name>`.
    fn explicit_labels(&self, path: &[String]) -> toml::Table {
        let mut labels = toml::Table::new();
        for (name, e) in self.param_entries() {
            let mut p = path.to_vec();
            p.push(name.clone());
            if e.label() != p.join(".") {
                labels.insert(name.clone(), toml::Value::String(e.label().to_string()));
            }
        }
        labels
    }

    /// Children the way a recipe declares them for this kind.
    fn recipe_children(&self, t: &mut toml::Table, children: Vec<(String, toml::Table)>) {
        let layout = self.layer().child_layout();
        let ordered = matches!(layout, ChildLayout::Sequence { .. });
        let numeric = children
            .iter()
            .enumerate()
            .all(|(i, (n, _))| *n == i.to_string());
        if children.is_empty() && !ordered {
            return;
        }
        if ordered && numeric {
            let items = children.into_iter().map(|(_, c)| toml::Value::Table(c));
            t.insert("layers".into(), toml::Value::Array(items.collect()));
        } else if matches!(layout, ChildLayout::Slots { .. }) {
            for (n, c) in children {
                t.insert(n, toml::Value::Table(c));
            }
        } else {
            let ct = children
                .into_iter()
                .map(|(n, c)| (n, toml::Value::Table(c)))
                .collect();
            t.insert("children".into(), toml::Value::Table(ct));
        }
    }

    /// Rebuilds a tree from [`to_toml`](Self::to_toml)'s output, making each layer by its kind
    /// through `registry`. Parameters come back as slots (bind them with [`bind`](Self::bind));
    /// state as slots.
    pub fn from_toml(t: &toml::Table, registry: &Registry) -> Result<Node> {
        let kind = match t.get("type") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => return Err(Error::Config("layer table without a `type` string".into())),
        };
        let mut cfg = t.clone();
        for k in RESERVED.iter().chain(["name"].iter()) {
            cfg.remove(*k);
        }
        let mut node = Node::from_arc(registry.make_layer(&kind, &cfg)?);
        if let Some(toml::Value::Table(ps)) = t.get("params") {
            for (n, e) in ps {
                let get = |k: &str| {
                    e.get(k).ok_or_else(|| {
                        Error::Config(format!("param `{n}` of `{kind}` lacks `{k}`"))
                    })
                };
                let label = get("label")?.as_str().unwrap_or_default().to_string();
                let shape = match get("shape")? {
                    toml::Value::Array(a) => a.iter().filter_map(|v| v.as_integer()).collect(),
                    _ => {
                        return Err(Error::Config(format!(
                            "param `{n}`: shape must be an array"
                        )))
                    }
                };
                let dtype = kind_from_name(get("dtype")?.as_str().unwrap_or("float32"))?;
                node = node.with_param(
                    n.clone(),
                    ParamEntry::Slot(ParameterSlot {
                        label,
                        shape,
                        kind: dtype,
                        trainable: true,
                        quantized: None,
                    }),
                );
            }
        }
        if let Some(toml::Value::Table(ss)) = t.get("states") {
            for (n, l) in ss {
                let label = l.as_str().unwrap_or_default().to_string();
                node = node.with_state(n.clone(), StateEntry::Slot { label });
            }
        }
        if let Some(toml::Value::Array(cs)) = t.get("children") {
            for c in cs {
                let ct = c
                    .as_table()
                    .ok_or_else(|| Error::Config("child must be a table".into()))?;
                let name = match ct.get("name") {
                    Some(toml::Value::String(s)) => s.clone(),
                    _ => return Err(Error::Config("child table without a `name`".into())),
                };
                let child = Node::from_toml(ct, registry).map_err(|e| e.in_child(&name))?;
                node = node.with_child(name, child);
            }
        }
        Ok(node)
    }
}

/// The whole model as the TOML text of a recipe's `[model]` section (its recipe form), so that
/// recipe -> tree -> TOML -> tree gives the same tree and the same parameter labels.
pub fn model_toml(node: &Node) -> Result<String> {
    let mut root = toml::Table::new();
    root.insert(
        "model".into(),
        toml::Value::Table(node.to_toml_as(Form::Recipe)?),
    );
    toml::to_string(&root).map_err(|e| crate::Error::Config(format!("cannot write TOML: {e}")))
}
