//! Attention masks on attention logits with a query axis (`seq`) and a key axis (`kv_seq`).
//!
//! - `ApplyCausalAttentionMask`: query position `i` sees key position `j` iff `j <= i`.
//! - `ApplyCausalSlidingWindowAttentionMask`: iff `j <= i` and `i - j < window`.
//! - `ApplyExplicitAttentionMask`: a boolean mask from a side input (true = attend), broadcast
//!   by name.
//!
//! Positions come from the side inputs `token_positions` (queries) and `kv_token_positions`
//! (keys; defaults to the query positions when the lengths agree) or default to `0..len`. With
//! the side input `document_ids` (packed windows: `{batch, seq}` integers), the causal masks
//! also keep each query to the keys of its own document.
//! Masked logits are set to `masked_out_value` (default -2.3819763e38, finite in bf16 and
//! float32).

use super::rope::positions;
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::tree::{Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};

fn default_q() -> String {
    "seq".into()
}
fn default_kv() -> String {
    "kv_seq".into()
}
fn default_masked() -> f64 {
    -2.3819763e38
}

/// The boolean causal (optionally sliding-window) mask with axes `{q_axis, kv_axis}` (plus
/// any batch axes of the position side inputs).
pub fn causal_mask(
    side: &SideInputs,
    q_axis: &str,
    kv_axis: &str,
    q_len: i64,
    kv_len: i64,
    window: Option<i64>,
    like: &tch::Tensor,
) -> Result<NamedTensor> {
    if crate::backend::is_meta(like) {
        let t = crate::backend::meta_empty(&[q_len, kv_len], tch::Kind::Bool)?;
        return NamedTensor::wrap(t, &[q_axis, kv_axis]);
    }
    let qpos = positions(side, "token_positions", q_axis, q_len, like)?;
    let kpos = match side.tensor("kv_token_positions")? {
        Some(_) => positions(side, "kv_token_positions", kv_axis, kv_len, like)?,
        None if side.tensor("token_positions")?.is_some() && q_len == kv_len => {
            qpos.rename(&[(q_axis, kv_axis)])?
        }
        None => positions(&SideInputs::new(), "", kv_axis, kv_len, like)?,
    };
    let diff = qpos.sub(&kpos)?; // i - j
    let mut m = diff.map_elementwise(|t| t.f_ge(0).ctx("mask"))?;
    // Packed windows: a query sees only keys of its own document.
    if side.tensor("document_ids")?.is_some() {
        let qdoc = positions(side, "document_ids", q_axis, q_len, like)?;
        let kdoc = if q_len == kv_len {
            qdoc.rename(&[(q_axis, kv_axis)])?
        } else {
            positions(side, "document_ids", kv_axis, kv_len, like)?
        };
        let same = qdoc
            .sub(&kdoc)?
            .map_elementwise(|t| t.f_eq(0).ctx("mask"))?;
        let both = m
            .to_kind(tch::Kind::Int8)?
            .mul(&same.to_kind(tch::Kind::Int8)?)?;
        m = both.map_elementwise(|t| t.f_gt(0).ctx("mask"))?;
    }
    match window {
        None => Ok(m),
        Some(w) => {
            let near = diff.map_elementwise(|t| t.f_lt(w).ctx("mask"))?;
            let both = m
                .tensor()
                .f_logical_and(&near.with_name_order(m.names())?.tensor().shallow_clone())
                .ctx("mask")?;
            NamedTensor::from_parts(both, m.names().to_vec())
        }
    }
}

fn sizes(x: &NamedTensor, q: &str, kv: &str, layer: &str) -> Result<(i64, i64)> {
    match (x.size_of(q), x.size_of(kv)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(Error::Axis(format!(
            "{layer}: attention logits need axes `{q}` and `{kv}`, got {}",
            x.describe()
        ))),
    }
}

/// Causal mask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApplyCausalAttentionMask {
    pub query_axis: String,
    pub kv_axis: String,
    pub masked_out_value: f64,
}

impl Default for ApplyCausalAttentionMask {
    fn default() -> Self {
        ApplyCausalAttentionMask {
            query_axis: default_q(),
            kv_axis: default_kv(),
            masked_out_value: default_masked(),
        }
    }
}

impl Layer for ApplyCausalAttentionMask {
    crate::layer_common!("ApplyCausalAttentionMask");
    fn summary(&self) -> String {
        format!("{} x {}", self.query_axis, self.kv_axis)
    }
    fn forward(&self, _n: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let (q, k) = sizes(
            &x,
            &self.query_axis,
            &self.kv_axis,
            "ApplyCausalAttentionMask",
        )?;
        let m = causal_mask(
            side,
            &self.query_axis,
            &self.kv_axis,
            q,
            k,
            None,
            x.tensor(),
        )?;
        Ok(x.fill_where_not(&m, self.masked_out_value)?.into())
    }
}

/// Causal sliding-window mask: each query sees the `window` most recent keys (itself included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplyCausalSlidingWindowAttentionMask {
    pub window: i64,
    #[serde(default = "default_q")]
    pub query_axis: String,
    #[serde(default = "default_kv")]
    pub kv_axis: String,
    #[serde(default = "default_masked")]
    pub masked_out_value: f64,
}

impl ApplyCausalSlidingWindowAttentionMask {
    /// A sliding-window mask with the default axes.
    pub fn new(window: i64) -> Self {
        ApplyCausalSlidingWindowAttentionMask {
            window,
            query_axis: default_q(),
            kv_axis: default_kv(),
            masked_out_value: default_masked(),
        }
    }
}

impl Layer for ApplyCausalSlidingWindowAttentionMask {
    crate::layer_common!("ApplyCausalSlidingWindowAttentionMask");
    fn summary(&self) -> String {
        format!(
            "{} x {}, window {}",
            self.query_axis, self.kv_axis, self.window
        )
    }
    fn forward(&self, _n: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        if self.window < 1 {
            return Err(Error::Config(format!(
                "sliding window must be at least 1, got {}",
                self.window
            )));
        }
        let (q, k) = sizes(
            &x,
            &self.query_axis,
            &self.kv_axis,
            "ApplyCausalSlidingWindowAttentionMask",
        )?;
        let m = causal_mask(
            side,
            &self.query_axis,
            &self.kv_axis,
            q,
            k,
            Some(self.window),
            x.tensor(),
        )?;
        Ok(x.fill_where_not(&m, self.masked_out_value)?.into())
    }
}

/// A mask from a side input (boolean named tensor, true = attend).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApplyExplicitAttentionMask {
    pub mask_input: String,
    pub masked_out_value: f64,
}

impl Default for ApplyExplicitAttentionMask {
    fn default() -> Self {
        ApplyExplicitAttentionMask {
            mask_input: "attn_mask".into(),
            masked_out_value: default_masked(),
        }
    }
}

impl Layer for ApplyExplicitAttentionMask {
    crate::layer_common!("ApplyExplicitAttentionMask");
    fn summary(&self) -> String {
        format!("from side input `{}`", self.mask_input)
    }
    fn forward(&self, _n: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let m = side.tensor(&self.mask_input)?.ok_or_else(|| {
            Error::Config(format!(
                "ApplyExplicitAttentionMask: missing side input `{}`",
                self.mask_input
            ))
        })?;
        let m = if m.kind() == tch::Kind::Bool {
            m.clone()
        } else {
            m.map_elementwise(|t| t.f_ne(0).ctx("mask"))?
        };
        Ok(x.fill_where_not(&m, self.masked_out_value)?.into())
    }
}
