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

/// The axes of one fused call, sorted by their role in the kernel's layout.
struct FusedAxes {
    /// Axes that queries, keys and values share (batch, heads): folded into the kernel's heads.
    shared: Vec<String>,
    /// The other query-only axes (grouped-query `q_rep`), also folded into the kernel's heads.
    rep: Vec<String>,
    /// The query's sequence axes.
    seq: Vec<String>,
    /// The value's own axes: the output's features.
    v_only: Vec<String>,
}

/// The sizes of one fused call's `[1, heads, sequence, features]` layout.
struct FusedDims {
    /// Shared heads (product of the shared axes).
    hs: i64,
    /// Queries per shared head (product of the repeated axes).
    r: i64,
    /// Query sequence length.
    s: i64,
    /// Key/value sequence length.
    skv: i64,
    /// Query/key feature size.
    d: i64,
    /// The sizes of the value's own axes.
    dv_sizes: Vec<i64>,
    /// Value feature size (their product).
    dv: i64,
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
        let Some(axes) = self.sort_axes(q, k, v) else {
            return Ok(None);
        };
        let dims = self.dims(q, k, v, &axes)?;
        let meta = crate::backend::is_meta(q.tensor());
        let Some((is_causal, mask)) = self.mask_input(q, side, &dims, meta)? else {
            return Ok(None); // batch-dependent positions: explicit path
        };
        let (qt, kt, vt) = self.flatten_inputs(q, k, v, &axes, &dims)?;
        let out = if meta {
            // Shape inference: libtorch has no meta kernel for the fused attention, and the
            // output shape is known.
            crate::backend::meta_empty(&[1, dims.hs * dims.r, dims.s, dims.dv], q.kind())?
        } else {
            Tensor::f_scaled_dot_product_attention(
                &qt,
                &kt,
                &vt,
                mask.as_ref(),
                0.0,
                is_causal,
                Some(1.0),
                dims.r > 1,
            )
            .ctx("attention: scaled_dot_product_attention")?
        };
        Ok(Some(Self::unflatten_output(
            out,
            q,
            k,
            axes,
            dims.dv_sizes,
        )?))
    }

    /// Sorts the axes of `q`, `k` and `v` by their role in the kernel's layout, or returns
    /// None when they do not fit the fused kernel.
    fn sort_axes(&self, q: &NamedTensor, k: &NamedTensor, v: &NamedTensor) -> Option<FusedAxes> {
        if q.positional_ndim() + k.positional_ndim() + v.positional_ndim() != 0
            || q.kind() != k.kind()
            || q.kind() != v.kind()
            || !q.has(&self.proj)
            || !k.has(&self.proj)
            || !k.has(&self.kv)
            || !v.has(&self.kv)
            || q.has(&self.kv)
        {
            return None;
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
            return None;
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
            return None;
        }
        let (seq, rep): (Vec<String>, Vec<String>) = match &self.mask {
            MaskKind::None => (q_only.clone(), vec![]),
            MaskKind::Causal { q_axis } | MaskKind::Sliding { q_axis, .. } => {
                if !q_only.contains(q_axis) {
                    return None;
                }
                (
                    vec![q_axis.clone()],
                    q_only.iter().filter(|n| *n != q_axis).cloned().collect(),
                )
            }
        };
        Some(FusedAxes {
            shared,
            rep,
            seq,
            v_only,
        })
    }

    /// Reads the sizes of the kernel's layout off the inputs.
    fn dims(
        &self,
        q: &NamedTensor,
        k: &NamedTensor,
        v: &NamedTensor,
        axes: &FusedAxes,
    ) -> Result<FusedDims> {
        let hs: i64 = sizes_of(k, &axes.shared)?.iter().product();
        let r: i64 = sizes_of(q, &axes.rep)?.iter().product();
        let s: i64 = sizes_of(q, &axes.seq)?.iter().product();
        let skv = k.size_of(&self.kv)?;
        let d = q.size_of(&self.proj)?;
        let dv_sizes = sizes_of(v, &axes.v_only)?;
        let dv: i64 = dv_sizes.iter().product();
        Ok(FusedDims {
            hs,
            r,
            s,
            skv,
            d,
            dv_sizes,
            dv,
        })
    }

    /// Decides how the kernel masks: `(is_causal, explicit mask)`, the kernel's own causal
    /// flag for plain causal attention over equal lengths, else a `[query, kv]` mask tensor.
    /// Returns None when the mask depends on the batch (the caller then runs the explicit
    /// composition).
    fn mask_input(
        &self,
        q: &NamedTensor,
        side: &SideInputs,
        dims: &FusedDims,
        meta: bool,
    ) -> Result<Option<(bool, Option<Tensor>)>> {
        let (s, skv) = (dims.s, dims.skv);
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
        Ok(Some((is_causal, mask)))
    }

    /// Lays out queries, keys and values as the kernel's `[1, heads, sequence, features]`
    /// tensors.
    fn flatten_inputs(
        &self,
        q: &NamedTensor,
        k: &NamedTensor,
        v: &NamedTensor,
        axes: &FusedAxes,
        dims: &FusedDims,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let FusedDims {
            hs,
            r,
            s,
            skv,
            d,
            dv,
            ..
        } = *dims;
        let mut qo = axes.shared.clone();
        qo.extend(axes.rep.iter().cloned());
        qo.extend(axes.seq.iter().cloned());
        qo.push(self.proj.clone());
        let qt = q
            .with_name_order(&qo)?
            .tensor()
            .f_reshape([1, hs * r, s, d])
            .ctx("attention: query")?;
        let mut ko = axes.shared.clone();
        ko.push(self.kv.clone());
        ko.push(self.proj.clone());
        let kt = k
            .with_name_order(&ko)?
            .tensor()
            .f_reshape([1, hs, skv, d])
            .ctx("attention: key")?;
        let mut vo = axes.shared.clone();
        vo.push(self.kv.clone());
        vo.extend(axes.v_only.iter().cloned());
        let vt = v
            .with_name_order(&vo)?
            .tensor()
            .f_reshape([1, hs, skv, dv])
            .ctx("attention: value")?;
        Ok((qt, kt, vt))
    }

    /// Reshapes the kernel's output back to named axes: the shared, repeated and sequence
    /// axes, then the value's own axes.
    fn unflatten_output(
        out: Tensor,
        q: &NamedTensor,
        k: &NamedTensor,
        axes: FusedAxes,
        dv_sizes: Vec<i64>,
    ) -> Result<NamedTensor> {
        let mut shape = sizes_of(k, &axes.shared)?;
        shape.extend(sizes_of(q, &axes.rep)?);
        shape.extend(sizes_of(q, &axes.seq)?);
        shape.extend(dv_sizes);
        let out = out.f_reshape(shape.as_slice()).ctx("attention: output")?;
        let mut names = axes.shared;
        names.extend(axes.rep);
        names.extend(axes.seq);
        names.extend(axes.v_only);
        NamedTensor::from_parts(out, names)
    }
}

/// The sizes of `names` in `t`, in order.
fn sizes_of(t: &NamedTensor, names: &[String]) -> Result<Vec<i64>> {
    names.iter().map(|n| t.size_of(n)).collect()
}
