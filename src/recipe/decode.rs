//! Helpers that decode raw recipe values with located, key-path-named errors.

use super::raw::{RNode, RTable, RVal};
use super::source::{did_you_mean, Diagnostic};

/// Joins a key path.
pub fn join(path: &[String]) -> String {
    path.join(".")
}

/// `node` as a table, or an error naming what was expected.
pub fn table<'a>(node: &'a RNode, path: &[String], what: &str) -> Result<&'a RTable, Diagnostic> {
    node.as_table().ok_or_else(|| {
        Diagnostic::new(format!(
            "{what} must be a table, found {}",
            node.type_name()
        ))
        .at(node.loc.clone())
        .key(join(path))
    })
}

/// Errors on the first key of `t` not in `allowed`, with "did you mean".
pub fn check_keys(
    t: &RTable,
    allowed: &[&str],
    path: &[String],
    what: &str,
) -> Result<(), Diagnostic> {
    for (k, e) in t {
        if !allowed.contains(&k.as_str()) {
            let mut kp = path.to_vec();
            kp.push(k.clone());
            let mut d = Diagnostic::new(format!("unknown key `{k}` in {what}"))
                .at(e.key_loc.clone())
                .key(join(&kp));
            if let Some(s) = did_you_mean(k, allowed.iter().copied()) {
                d = d.label(format!("did you mean `{s}`?"));
            }
            return Err(d.note(format!("expected one of: {}", allowed.join(", "))));
        }
    }
    Ok(())
}

fn type_err(n: &RNode, path: &[String], key: &str, expected: &str) -> Diagnostic {
    let mut kp = path.to_vec();
    kp.push(key.to_string());
    Diagnostic::new(format!(
        "`{key}` must be {expected}, found {}",
        n.type_name()
    ))
    .at(n.loc.clone())
    .key(join(&kp))
}

/// An optional string.
pub fn opt_str(t: &RTable, key: &str, path: &[String]) -> Result<Option<String>, Diagnostic> {
    match t.get(key) {
        None => Ok(None),
        Some(e) => match &e.node.val {
            RVal::Str(s) => Ok(Some(s.clone())),
            _ => Err(type_err(&e.node, path, key, "a string")),
        },
    }
}

/// An optional integer.
pub fn opt_int(t: &RTable, key: &str, path: &[String]) -> Result<Option<i64>, Diagnostic> {
    match t.get(key) {
        None => Ok(None),
        Some(e) => match &e.node.val {
            RVal::Int(i) => Ok(Some(*i)),
            _ => Err(type_err(&e.node, path, key, "an integer")),
        },
    }
}

/// An optional table of axis name -> size.
pub fn opt_axes(
    t: &RTable,
    key: &str,
    path: &[String],
) -> Result<Option<crate::layers::Axes>, Diagnostic> {
    let Some(e) = t.get(key) else { return Ok(None) };
    let mut kp = path.to_vec();
    kp.push(key.to_string());
    let tab = match &e.node.val {
        RVal::Table(tab) => tab,
        _ => {
            return Err(type_err(
                &e.node,
                path,
                key,
                "a table of axis sizes like { batch = 8 }",
            ))
        }
    };
    let mut out = crate::layers::Axes::new();
    for (name, v) in tab {
        match v.node.val {
            RVal::Int(s) if s >= 1 => {
                out.insert(name.clone(), s);
            }
            _ => {
                let mut kk = kp.clone();
                kk.push(name.clone());
                return Err(Diagnostic::new(format!(
                    "axis `{name}` must have a positive integer size, found {}",
                    v.node.type_name()
                ))
                .at(v.node.loc.clone())
                .key(join(&kk)));
            }
        }
    }
    Ok(Some(out))
}

/// The location of `key` in `t` (its key, else its value).
pub fn key_loc(t: &RTable, key: &str) -> Option<super::source::Loc> {
    t.get(key)
        .and_then(|e| e.key_loc.clone().or(e.node.loc.clone()))
}
