//! The tree as TOML: kinds, configs, child names, parameter labels, shapes and dtypes (no
//! values), and back through a [`Registry`].

use super::{Node, Registry};
use crate::base::{dtype, Error, Result};
use crate::params::{ParamEntry, ParameterSlot, StateEntry};

const RESERVED: [&str; 4] = ["type", "params", "states", "children"];

fn kind_from_name(s: &str) -> Result<tch::Kind> {
    dtype::from_name(s).ok_or_else(|| Error::Config(format!("unknown dtype `{s}`")))
}

impl Node {
    /// Serializes the structure (kinds, configs, children, parameter labels and shapes; no
    /// values) to a TOML table: `type`, the config keys, `params`, `states`, `children`.
    pub fn to_toml(&self) -> Result<toml::Table> {
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
        if !self.param_entries().is_empty() {
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
            t.insert("params".into(), toml::Value::Table(ps));
        }
        if !self.state_entries().is_empty() {
            let mut ss = toml::Table::new();
            for (n, s) in self.state_entries() {
                ss.insert(n.clone(), toml::Value::String(s.label().to_string()));
            }
            t.insert("states".into(), toml::Value::Table(ss));
        }
        if !self.children().is_empty() {
            // An array of single-entry tables keeps the child order.
            let mut cs = vec![];
            for (n, c) in self.children() {
                let mut e = c.to_toml()?;
                e.insert("name".into(), toml::Value::String(n.clone()));
                cs.push(toml::Value::Table(e));
            }
            t.insert("children".into(), toml::Value::Array(cs));
        }
        Ok(t)
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
