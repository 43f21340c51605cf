//! `KnockOutAttentionHeads` (Penzai's `model_rewiring.KnockOutAttentionHeads`): multiplies
//! attention weights by a mask over head axes, so that a head with mask 0 contributes nothing
//! to the attention output (and a head with mask 1 is unchanged).
//!
//! ```toml
//! [[patch]]
//! select = "Attention > query_key_to_attn > Softmax"
//! action = "insert_after"
//! with = { type = "KnockOutAttentionHeads", head_mask = { axes = ["heads"], values = [1, 0, 1, 1] } }
//! ```
//!
//! `head_mask` is a named array: its axis names and its values, nested in that order
//! (`axes = ["kv_heads", "q_rep"], values = [[1, 1], [0, 1]]` for grouped-query attention). The
//! weights must have every mask axis with the mask's size; other axes broadcast.

use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::tree::{Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};

/// A named array in a config: axis names and nested values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadMask {
    pub axes: Vec<String>,
    pub values: toml::Value,
}

impl HeadMask {
    /// The values, flattened row-major, and the shape they were nested in.
    pub fn flat(&self) -> Result<(Vec<f64>, Vec<i64>)> {
        fn walk(
            v: &toml::Value,
            depth: usize,
            shape: &mut Vec<i64>,
            out: &mut Vec<f64>,
        ) -> Result<()> {
            match v {
                toml::Value::Array(a) => {
                    let n = a.len() as i64;
                    match shape.get(depth) {
                        Some(&m) if m != n => {
                            return Err(Error::Config(format!(
                                "KnockOutAttentionHeads: head_mask.values is ragged (rows of {m} and {n} at depth {depth})"
                            )))
                        }
                        None => shape.push(n),
                        _ => {}
                    }
                    a.iter().try_for_each(|x| walk(x, depth + 1, shape, out))
                }
                toml::Value::Integer(i) => {
                    out.push(*i as f64);
                    Ok(())
                }
                toml::Value::Float(f) if f.is_finite() => {
                    out.push(*f);
                    Ok(())
                }
                toml::Value::Boolean(b) => {
                    out.push(f64::from(u8::from(*b)));
                    Ok(())
                }
                other => Err(Error::Config(format!(
                    "KnockOutAttentionHeads: head_mask.values must hold finite numbers or booleans, found {other}"
                ))),
            }
        }
        let (mut shape, mut out) = (vec![], vec![]);
        walk(&self.values, 0, &mut shape, &mut out)?;
        Ok((out, shape))
    }
}

/// Multiplies attention weights by `head_mask` (broadcast by axis name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnockOutAttentionHeads {
    pub head_mask: HeadMask,
}

impl Layer for KnockOutAttentionHeads {
    crate::layer_common!("KnockOutAttentionHeads");
    fn summary(&self) -> String {
        match self.head_mask.flat() {
            Ok((v, _)) => format!(
                "{:?}: {} of {} kept",
                self.head_mask.axes,
                v.iter().filter(|&&x| x != 0.0).count(),
                v.len()
            ),
            Err(_) => String::new(),
        }
    }
    fn check(&self) -> Result<()> {
        let (v, shape) = self.head_mask.flat()?;
        if shape.len() != self.head_mask.axes.len() || v.is_empty() {
            return Err(Error::Config(format!(
                "KnockOutAttentionHeads: head_mask has axes {:?} but values nested {} deep (shape {shape:?}); give one nesting level per axis",
                self.head_mask.axes,
                shape.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(a) = self
            .head_mask
            .axes
            .iter()
            .find(|a| !seen.insert(a.as_str()))
        {
            return Err(Error::Config(format!(
                "KnockOutAttentionHeads: head_mask names the axis `{a}` twice"
            )));
        }
        Ok(())
    }
    fn forward(&self, _node: &Node, x: Value, _side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let (v, shape) = self.head_mask.flat()?;
        for (a, &n) in self.head_mask.axes.iter().zip(&shape) {
            match x.size_of(a) {
                Ok(m) if m == n => {}
                _ => {
                    return Err(Error::Axis(format!(
                        "KnockOutAttentionHeads: the mask has axis `{a}` of size {n}, the attention weights are {}",
                        x.describe()
                    )))
                }
            }
        }
        let names: Vec<&str> = self.head_mask.axes.iter().map(String::as_str).collect();
        let m = tch::Tensor::from_slice(&v)
            .f_reshape(&shape)
            .and_then(|m| m.f_to_kind(x.kind()))
            .ctx("KnockOutAttentionHeads: mask")?;
        let m = crate::backend::to_device_like(&m, x.tensor())?;
        Ok(x.mul(&NamedTensor::wrap(m, &names)?)?.into())
    }
}
