//! The raw recipe: a TOML tree where every key and value remembers where it was written, so
//! that any later error can point at the file, line and column. Includes are deep-merged into
//! it (later wins) and `--set` overrides are applied to it before anything is decoded.

use super::source::{Diagnostic, Loc, Sources};
use indexmap::IndexMap;

/// A value with its location.
#[derive(Debug, Clone)]
pub struct RNode {
    pub val: RVal,
    pub loc: Option<Loc>,
}

/// A raw value.
#[derive(Debug, Clone)]
pub enum RVal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<RNode>),
    Table(RTable),
}

/// A table entry: where its key was written, and its value.
#[derive(Debug, Clone)]
pub struct REntry {
    pub key_loc: Option<Loc>,
    pub node: RNode,
}

/// An ordered table.
pub type RTable = IndexMap<String, REntry>;

impl RNode {
    /// The name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.val {
            RVal::Str(_) => "a string",
            RVal::Int(_) => "an integer",
            RVal::Float(_) => "a float",
            RVal::Bool(_) => "a boolean",
            RVal::Array(_) => "an array",
            RVal::Table(_) => "a table",
        }
    }

    /// The table, if it is one.
    pub fn as_table(&self) -> Option<&RTable> {
        match &self.val {
            RVal::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Converts to a plain `toml::Value` (locations dropped).
    pub fn to_toml(&self) -> toml::Value {
        match &self.val {
            RVal::Str(s) => toml::Value::String(s.clone()),
            RVal::Int(i) => toml::Value::Integer(*i),
            RVal::Float(f) => toml::Value::Float(*f),
            RVal::Bool(b) => toml::Value::Boolean(*b),
            RVal::Array(a) => toml::Value::Array(a.iter().map(|n| n.to_toml()).collect()),
            RVal::Table(t) => toml::Value::Table(
                t.iter()
                    .map(|(k, e)| (k.clone(), e.node.to_toml()))
                    .collect(),
            ),
        }
    }

    /// The value at a relative dotted path inside this node (`a.b.0.c`), if any.
    pub fn lookup(&self, path: &[String]) -> Option<&RNode> {
        let mut cur = self;
        for seg in path {
            cur = match &cur.val {
                RVal::Table(t) => &t.get(seg)?.node,
                RVal::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The location of the key (or value) at a relative path, for pointing at it.
    pub fn loc_of(&self, path: &[String]) -> Option<Loc> {
        if path.is_empty() {
            return self.loc.clone();
        }
        let (last, parent) = path.split_last()?;
        let p = self.lookup(parent)?;
        match &p.val {
            RVal::Table(t) => t
                .get(last)
                .and_then(|e| e.key_loc.clone().or(e.node.loc.clone())),
            RVal::Array(a) => a
                .get(last.parse::<usize>().ok()?)
                .and_then(|n| n.loc.clone()),
            _ => p.loc.clone(),
        }
    }
}

fn loc(file: usize, span: Option<std::ops::Range<usize>>) -> Option<Loc> {
    span.map(|span| Loc { file, span })
}

fn from_value(v: &toml_edit::Value, file: usize) -> Result<RNode, Diagnostic> {
    let l = loc(file, v.span());
    let val = match v {
        toml_edit::Value::String(s) => RVal::Str(s.value().clone()),
        toml_edit::Value::Integer(i) => RVal::Int(*i.value()),
        toml_edit::Value::Float(f) => RVal::Float(*f.value()),
        toml_edit::Value::Boolean(b) => RVal::Bool(*b.value()),
        toml_edit::Value::Datetime(_) => {
            return Err(Diagnostic::new("dates and times are not used in recipes").at(l))
        }
        toml_edit::Value::Array(a) => RVal::Array(
            a.iter()
                .map(|x| from_value(x, file))
                .collect::<Result<_, _>>()?,
        ),
        toml_edit::Value::InlineTable(t) => {
            let mut out = RTable::new();
            for (k, v) in t.iter() {
                let key_loc = t.key(k).and_then(|key| loc(file, key.span()));
                out.insert(
                    k.to_string(),
                    REntry {
                        key_loc,
                        node: from_value(v, file)?,
                    },
                );
            }
            RVal::Table(out)
        }
    };
    Ok(RNode { val, loc: l })
}

fn from_table(t: &toml_edit::Table, file: usize) -> Result<RNode, Diagnostic> {
    let mut out = RTable::new();
    for (k, item) in t.iter() {
        let key_loc = t.key(k).and_then(|key| loc(file, key.span()));
        let node = from_item(item, file, key_loc.clone())?;
        out.insert(k.to_string(), REntry { key_loc, node });
    }
    Ok(RNode {
        val: RVal::Table(out),
        loc: loc(file, t.span()),
    })
}

fn from_item(
    item: &toml_edit::Item,
    file: usize,
    key_loc: Option<Loc>,
) -> Result<RNode, Diagnostic> {
    match item {
        toml_edit::Item::None => Ok(RNode {
            val: RVal::Table(RTable::new()),
            loc: key_loc,
        }),
        toml_edit::Item::Value(v) => from_value(v, file),
        toml_edit::Item::Table(t) => {
            let mut n = from_table(t, file)?;
            if n.loc.is_none() {
                n.loc = key_loc;
            }
            Ok(n)
        }
        toml_edit::Item::ArrayOfTables(a) => {
            let items = a
                .iter()
                .map(|t| from_table(t, file))
                .collect::<Result<_, _>>()?;
            Ok(RNode {
                val: RVal::Array(items),
                loc: loc(file, a.span()).or(key_loc),
            })
        }
    }
}

/// Parses TOML text (already added to `sources` as `file`) into a raw tree.
pub fn parse(sources: &Sources, file: usize) -> Result<RNode, Diagnostic> {
    let text = sources
        .file(file)
        .map(|f| f.text.clone())
        .unwrap_or_default();
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        Diagnostic::new(format!("invalid TOML: {msg}")).at(loc(file, e.span()))
    })?;
    from_table(doc.as_table(), file)
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else is replaced.
pub fn merge(base: &mut RNode, over: RNode) {
    match (&mut base.val, over.val) {
        (RVal::Table(b), RVal::Table(o)) => {
            for (k, e) in o {
                match b.get_mut(&k) {
                    Some(existing) => {
                        existing.key_loc = e.key_loc.or(existing.key_loc.clone());
                        merge(&mut existing.node, e.node);
                    }
                    None => {
                        b.insert(k, e);
                    }
                }
            }
        }
        (_, v) => {
            base.val = v;
            base.loc = over.loc;
        }
    }
}

/// Sets the value at a dotted path, creating tables on the way (array elements are addressed
/// by index). `key_loc` is where the override was written.
pub fn set_path(
    root: &mut RNode,
    path: &[String],
    value: RNode,
    key_loc: Option<Loc>,
) -> Result<(), Diagnostic> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Diagnostic::new("--set needs a key path").at(key_loc));
    };
    match &mut root.val {
        RVal::Table(t) => {
            if rest.is_empty() {
                match t.get_mut(first) {
                    // A `--set` replaces the value, a table included (it does not merge).
                    Some(e) => e.node = value,
                    None => {
                        t.insert(
                            first.clone(),
                            REntry {
                                key_loc,
                                node: value,
                            },
                        );
                    }
                }
                return Ok(());
            }
            let entry = t.entry(first.clone()).or_insert_with(|| REntry {
                key_loc: key_loc.clone(),
                node: RNode {
                    val: RVal::Table(RTable::new()),
                    loc: key_loc.clone(),
                },
            });
            set_path(&mut entry.node, rest, value, key_loc)
        }
        RVal::Array(a) => {
            let idx = first
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| {
                    Diagnostic::new(format!(
                        "`{first}` is not an index of this array of {} elements",
                        a.len()
                    ))
                    .at(key_loc.clone())
                })?;
            if rest.is_empty() {
                merge(&mut a[idx], value);
                Ok(())
            } else {
                set_path(&mut a[idx], rest, value, key_loc)
            }
        }
        _ => Err(Diagnostic::new(format!(
            "cannot set `{}` inside {}, which is not a table",
            path.join("."),
            root.type_name()
        ))
        .at(key_loc)),
    }
}
