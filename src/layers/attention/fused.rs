//! The fused path of `Attention`: recognizing the standard sublayer shape and running it
//! through libtorch's `scaled_dot_product_attention`.

use crate::base::{Result, TorchContext};
use crate::layers::grouping::Sequential;
use crate::layers::masks::{
    causal_mask, ApplyCausalAttentionMask, ApplyCausalSlidingWindowAttentionMask,
};
use crate::layers::misc::{ContractTogether, Softmax};
use crate::named::NamedTensor;
use crate::tree::{Node, SideInputs, Value};
use tch::Tensor;

enum MaskKind {
    None,
    Causal { q_axis: String },
    Sliding { q_axis: String, window: i64 },
}

/// What the fused kernel needs to know, read off the standard sublayer shapes.
pub(super) struct FusedPlan {
    proj: String,
    kv: String,
    mask: MaskKind,
}

impl FusedPlan {
    pub(super) fn recognize(node: &Node) -> Result<Option<FusedPlan>> {
        let qk = node.child("query_key_to_attn")?;
        let av = node.child("attn_value_to_output")?;
        if qk.kind() != "Sequential" || qk.layer_as::<Sequential>().is_none() {
            return Ok(None);
        }
        let cs = qk.children();
        if cs.len() < 2 || cs.len() > 3 {
            return Ok(None);
        }
        let proj = match cs[0].1.layer_as::<ContractTogether>() {
            Some(c) if c.over.len() == 1 => c.over[0].clone(),
            _ => return Ok(None),
        };
        let kv = match cs[cs.len() - 1].1.layer_as::<Softmax>() {
            Some(s) if s.axes.len() == 1 => s.axes[0].clone(),
            _ => return Ok(None),
        };
        let mask = if cs.len() == 3 {
            let m = &cs[1].1;
            if let Some(c) = m.layer_as::<ApplyCausalAttentionMask>() {
                if c.kv_axis != kv {
                    return Ok(None);
                }
                MaskKind::Causal {
                    q_axis: c.query_axis.clone(),
                }
            } else if let Some(c) = m.layer_as::<ApplyCausalSlidingWindowAttentionMask>() {
                if c.kv_axis != kv || c.window < 1 {
                    return Ok(None);
                }
                MaskKind::Sliding {
                    q_axis: c.query_axis.clone(),
                    window: c.window,
                }
            } else {
                return Ok(None);
            }
        } else {
            MaskKind::None
        };
        match av.layer_as::<ContractTogether>() {
            Some(c) if c.over == [kv.clone()] => {}
            _ => return Ok(None),
        }
        Ok(Some(FusedPlan { proj, kv, mask }))
    }

    /// Runs the fused kernel, or returns None when the inputs do not fit it (the caller then
    /// runs the explicit composition).
    pub(super) fn run(
        &self,
        q: &Value,
        k: &Value,
        v: &Value,
        side: &SideInputs,
    ) -> Result<Option<NamedTensor>> {
        let (q, k, v) = match (q, k, v) {
            (Value::Tensor(q), Value::Tensor(k), Value::Tensor(v)) => (q, k, v),
            _ => return Ok(None),
        };
        if q.positional_ndim() + k.positional_ndim() + v.positional_ndim() != 0
            || q.kind() != k.kind()
            || q.kind() != v.kind()
            || !q.has(&self.proj)
            || !k.has(&self.proj)
            || !k.has(&self.kv)
            || !v.has(&self.kv)
            || q.has(&self.kv)
        {
            return Ok(None);
        }
        let shared: Vec<String> = k
            .names()
            .iter()
            .filter(|n| **n != self.kv && **n != self.proj)
            .cloned()
            .collect();
        if shared.iter().any(|n| {
            !q.has(n)
                || !v.has(n)
                || q.size_of(n).ok() != k.size_of(n).ok()
                || v.size_of(n).ok() != k.size_of(n).ok()
        }) {
            return Ok(None);
        }
        let q_only: Vec<String> = q
            .names()
            .iter()
            .filter(|n| !shared.contains(n) && **n != self.proj)
            .cloned()
            .collect();
        let v_only: Vec<String> = v
            .names()
            .iter()
            .filter(|n| !shared.contains(n) && **n != self.kv)
            .cloned()
            .collect();
        if v_only.iter().any(|n| q_only.contains(n)) {
            return Ok(None);
        }
        let (seq_axes, rep): (Vec<String>, Vec<String>) = match &self.mask {
            MaskKind::None => (q_only.clone(), vec![]),
            MaskKind::Causal { q_axis } | MaskKind::Sliding { q_axis, .. } => {
                if !q_only.contains(q_axis) {
                    return Ok(None);
                }
                (
                    vec![q_axis.clone()],
                    q_only.iter().filter(|n| *n != q_axis).cloned().collect(),
                )
            }
        };
        let size = |t: &NamedTensor, names: &[String]| -> Result<Vec<i64>> {
            names.iter().map(|n| t.size_of(n)).collect()
        };
        let hs: i64 = size(k, &shared)?.iter().product();
        let r: i64 = size(q, &rep)?.iter().product();
        let s: i64 = size(q, &seq_axes)?.iter().product();
        let skv = k.size_of(&self.kv)?;
        let d = q.size_of(&self.proj)?;
        let dv_sizes = size(v, &v_only)?;
        let dv: i64 = dv_sizes.iter().product();

        let meta = crate::backend::is_meta(q.tensor());
        let mut is_causal = false;
        let mut mask: Option<Tensor> = None;
        match &self.mask {
            MaskKind::None => {}
            MaskKind::Causal { .. } | MaskKind::Sliding { .. } if meta => {}
            MaskKind::Causal { q_axis } | MaskKind::Sliding { q_axis, .. } => {
                let window = match &self.mask {
                    MaskKind::Sliding { window, .. } => Some(*window),
                    _ => None,
                };
                let positioned = side.tensor("token_positions")?.is_some()
                    || side.tensor("kv_token_positions")?.is_some();
                if window.is_none() && !positioned && s == skv {
                    is_causal = true;
                } else {
                    let m = causal_mask(side, q_axis, &self.kv, s, skv, window, q.tensor())?;
                    if m.names().len() != 2 {
                        return Ok(None); // batch-dependent positions: explicit path
                    }
                    let m = m.with_name_order(&[q_axis.clone(), self.kv.clone()])?;
                    mask = Some(m.tensor().shallow_clone());
                }
            }
        }
        let mut qo = shared.clone();
        qo.extend(rep.iter().cloned());
        qo.extend(seq_axes.iter().cloned());
        qo.push(self.proj.clone());
        let qt = q
            .with_name_order(&qo)?
            .tensor()
            .f_reshape([1, hs * r, s, d])
            .ctx("attention: query")?;
        let mut ko = shared.clone();
        ko.push(self.kv.clone());
        ko.push(self.proj.clone());
        let kt = k
            .with_name_order(&ko)?
            .tensor()
            .f_reshape([1, hs, skv, d])
            .ctx("attention: key")?;
        let mut vo = shared.clone();
        vo.push(self.kv.clone());
        vo.extend(v_only.iter().cloned());
        let vt = v
            .with_name_order(&vo)?
            .tensor()
            .f_reshape([1, hs, skv, dv])
            .ctx("attention: value")?;
        let out = if meta {
            // Shape inference: libtorch has no meta kernel for the fused attention, and the
            // output shape is known.
            crate::backend::meta_empty(&[1, hs * r, s, dv], q.kind())?
        } else {
            Tensor::f_scaled_dot_product_attention(
                &qt,
                &kt,
                &vt,
                mask.as_ref(),
                0.0,
                is_causal,
                Some(1.0),
                r > 1,
            )
            .ctx("attention: scaled_dot_product_attention")?
        };
        let mut shape = size(k, &shared)?;
        shape.extend(size(q, &rep)?);
        shape.extend(size(q, &seq_axes)?);
        shape.extend(dv_sizes);
        let out = out.f_reshape(shape.as_slice()).ctx("attention: output")?;
        let mut names = shared;
        names.extend(rep);
        names.extend(seq_axes);
        names.extend(v_only);
        Ok(Some(NamedTensor::from_parts(out, names)?))
    }
}
