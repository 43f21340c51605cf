//! Values (tensors and nested tuples), side inputs and state snapshots as named arrays plus a
//! JSON description of their structure, so that an isolated submodel's inputs and outputs can
//! be written to one safetensors file and read back exactly.

use crate::base::{Error, Result};
use crate::named::{NamedTensor, SideInputs, SideValue, Value};
use crate::params::RandomStream;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;

/// A deep copy (new storage), so that later in-place updates cannot change it.
pub fn deep_copy(v: &Value) -> Result<Value> {
    Ok(match v {
        Value::Tensor(t) => Value::Tensor(t.detach().nmap(|x| {
            x.f_detach_copy().map_err(|e| Error::Torch {
                context: "copy".into(),
                source: e,
            })
        })?),
        Value::Tuple(items) => Value::Tuple(items.iter().map(deep_copy).collect::<Result<_>>()?),
    })
}

/// Adds `v` under `name` (a tuple's items as `name.0`, `name.1`, ...) and returns its structure:
/// `"tensor"` or an array of item structures.
pub fn flatten(name: &str, v: &Value, out: &mut Vec<(String, NamedTensor)>) -> Json {
    match v {
        Value::Tensor(t) => {
            out.push((name.to_string(), t.detach()));
            json!("tensor")
        }
        Value::Tuple(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| flatten(&format!("{name}.{i}"), x, out))
                .collect(),
        ),
    }
}

/// The value `flatten` wrote under `name` with structure `s`.
pub fn unflatten(name: &str, s: &Json, arrays: &BTreeMap<String, NamedTensor>) -> Result<Value> {
    match s {
        Json::String(t) if t == "tensor" => arrays
            .get(name)
            .cloned()
            .map(Value::Tensor)
            .ok_or_else(|| Error::Config(format!("the saved values lack the array `{name}`"))),
        Json::Array(items) => Ok(Value::Tuple(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| unflatten(&format!("{name}.{i}"), x, arrays))
                .collect::<Result<_>>()?,
        )),
        other => Err(Error::Config(format!(
            "the saved structure of `{name}` is not understood: {other}"
        ))),
    }
}

/// Side inputs as arrays (`side.<key>`) and a description of every entry.
pub fn flatten_side(side: &SideInputs, out: &mut Vec<(String, NamedTensor)>) -> Json {
    let mut m = serde_json::Map::new();
    for (k, v) in side.entries() {
        let d = match v {
            SideValue::Tensor(t) => {
                out.push((format!("side.{k}"), t.detach()));
                json!({ "tensor": format!("side.{k}") })
            }
            SideValue::Bool(b) => json!({ "bool": b }),
            SideValue::Int(i) => json!({ "int": i }),
            SideValue::Stream(s) => json!({ "stream": [s.base_seed(), s.position()] }),
        };
        m.insert(k.clone(), d);
    }
    Json::Object(m)
}

/// The side inputs `flatten_side` described.
pub fn unflatten_side(d: &Json, arrays: &BTreeMap<String, NamedTensor>) -> Result<SideInputs> {
    let mut side = SideInputs::new();
    let Some(m) = d.as_object() else {
        return Ok(side);
    };
    for (k, e) in m {
        let v = if let Some(name) = e.get("tensor").and_then(Json::as_str) {
            SideValue::Tensor(arrays.get(name).cloned().ok_or_else(|| {
                Error::Config(format!(
                    "the saved values lack the side input array `{name}`"
                ))
            })?)
        } else if let Some(b) = e.get("bool").and_then(Json::as_bool) {
            SideValue::Bool(b)
        } else if let Some(i) = e.get("int").and_then(Json::as_i64) {
            SideValue::Int(i)
        } else if let Some([seed, pos]) = e
            .get("stream")
            .and_then(|s| serde_json::from_value::<[u64; 2]>(s.clone()).ok())
            .as_ref()
        {
            SideValue::Stream(RandomStream::at(*seed, *pos))
        } else {
            return Err(Error::Config(format!(
                "side input `{k}`: not understood: {e}"
            )));
        };
        side.insert(k, v);
    }
    Ok(side)
}

/// The largest absolute difference between two values of the same structure and shapes (None
/// when the structure, axis names or shapes differ).
pub fn max_abs_diff(a: &Value, b: &Value) -> Result<Option<f64>> {
    match (a, b) {
        (Value::Tensor(x), Value::Tensor(y)) => {
            let Ok(y) = y.order_like(x) else {
                return Ok(None);
            };
            if x.tensor().size() != y.tensor().size() {
                return Ok(None);
            }
            if x.tensor().numel() == 0 {
                return Ok(Some(0.0));
            }
            let d = x
                .tensor()
                .f_to_kind(tch::Kind::Double)
                .and_then(|x64| {
                    y.tensor()
                        .f_to_kind(tch::Kind::Double)
                        .and_then(|y64| x64.f_sub(&y64))
                })
                .and_then(|d| d.f_abs())
                .and_then(|d| d.f_max())
                .and_then(|d| d.f_double_value(&[]))
                .map_err(|e| Error::Torch {
                    context: "difference".into(),
                    source: e,
                })?;
            Ok(Some(d))
        }
        (Value::Tuple(xs), Value::Tuple(ys)) if xs.len() == ys.len() => {
            let mut m = 0.0f64;
            for (x, y) in xs.iter().zip(ys) {
                match max_abs_diff(x, y)? {
                    Some(d) => m = m.max(d),
                    None => return Ok(None),
                }
            }
            Ok(Some(m))
        }
        _ => Ok(None),
    }
}

/// `{batch: 1, seq: 5} float32`, or `(a, b)` for a tuple.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Tensor(t) => t.describe(),
        Value::Tuple(items) => format!(
            "({})",
            items.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
    }
}
