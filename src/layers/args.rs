//! Reading the arguments of a kind declared by its arguments (`Affine`'s `input_axes`, ...) from
//! a config table. Errors are [`Error::ConfigField`]s naming the argument, so that a recipe can
//! point at it.

use super::Axes;
use crate::base::{Error, Result};

/// The name of a TOML value's type, for messages.
pub fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
        toml::Value::Datetime(_) => "a datetime",
    }
}

fn bad<T>(field: String, message: String) -> Result<T> {
    Err(Error::ConfigField { field, message })
}

/// Refuses the value `v` of `kind`'s field `field` unless `ok` holds; `want` says what is
/// accepted (`a finite number > 0`).
pub fn check_number(kind: &str, field: &str, v: f64, ok: bool, want: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    bad(
        field.into(),
        format!("{kind}: `{field}` must be {want}, got {v}"),
    )
}

/// Refuses an axis that appears in two of the axis groups `groups` (name, axes) of `kind`.
pub fn check_disjoint(kind: &str, groups: &[(&str, &Axes)]) -> Result<()> {
    for (i, (a, ax)) in groups.iter().enumerate() {
        for (b, bx) in &groups[i + 1..] {
            let both = ax.keys().find(|k| bx.contains_key(*k));
            // A Linear's output axes may reuse input names (they are contracted first).
            if let Some(k) = both.filter(|_| !(*a == "input_axes" && *b == "output_axes")) {
                return bad(
                    (*b).into(),
                    format!("{kind}: axis `{k}` is in both `{a}` and `{b}`"),
                );
            }
        }
    }
    for (g, ax) in groups {
        if let Some((k, n)) = ax.iter().find(|(_, &n)| n < 1) {
            return bad(
                (*g).into(),
                format!("{kind}: axis `{k}` of `{g}` has size {n}; sizes are at least 1"),
            );
        }
    }
    Ok(())
}

/// The required axes argument `key` (`{ name = size, ... }`, sizes at least 1) of `kind`.
pub fn axes(cfg: &toml::Table, key: &str, kind: &str) -> Result<Axes> {
    let Some(v) = cfg.get(key) else {
        return bad(key.into(), format!("`{kind}` is missing `{key}`"));
    };
    let Some(t) = v.as_table() else {
        return bad(
            key.into(),
            format!(
                "`{key}` must be a table of axis sizes like {{ batch = 8 }}, found {}",
                type_name(v)
            ),
        );
    };
    let mut out = Axes::new();
    for (name, size) in t {
        match size.as_integer() {
            Some(s) if s >= 1 => {
                out.insert(name.clone(), s);
            }
            _ => {
                return bad(
                    format!("{key}.{name}"),
                    format!(
                        "axis `{name}` must have a positive integer size, found {}",
                        type_name(size)
                    ),
                )
            }
        }
    }
    Ok(out)
}

/// The optional number argument `key`.
pub fn number(cfg: &toml::Table, key: &str) -> Result<Option<f64>> {
    match cfg.get(key) {
        None => Ok(None),
        Some(toml::Value::Float(f)) => Ok(Some(*f)),
        Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
        Some(_) => bad(key.into(), format!("`{key}` must be a number")),
    }
}
