//! How a Hugging Face tensor becomes a pzt parameter and back: HF stores linear weights as
//! `[out, in]`, pzt as `[input axes..., output axes...]`; Gemma's norm scales are `w` where pzt
//! keeps `1 + w`; GPT-NeoX fuses the query, key and value projections.

use super::Arch;
use crate::base::{Result, TorchContext};
use tch::Tensor;

/// How an HF tensor becomes a pzt parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Same layout.
    Same,
    /// `[out, in]` (with `in` elements per row) -> transpose -> reshape to the parameter's
    /// shape.
    Linear(i64),
    /// Reshape only (biases).
    Reshape,
    /// A weight per head, `[heads, head_dim]` with this `head_dim` in HF (Cohere's QK-norm):
    /// reshape only.
    PerHead(i64),
    /// Gemma norm scale: `1 + w`.
    PlusOne,
    /// GPT-NeoX fused QKV weight (`which` = 0, 1, 2 for q, k, v).
    QkvWeight(i64),
    /// GPT-NeoX fused QKV bias.
    QkvBias(i64),
    /// A router's weight: laid out as [`Transform::Linear`], but not a LoRA target (peft's
    /// routers are not `nn.Linear`).
    Router(i64),
    /// A tensor of experts stored expert by expert: the weight map expands it into one
    /// [`Transform::Expert`] per expert (never applied).
    PerExpert,
    /// Expert `index`'s `[out, fan_in]` weight: slice `index` of the parameter, laid out as a
    /// [`Transform::Linear`].
    Expert { index: i64, fan_in: i64 },
    /// Expert `index`'s bias: slice `index` of the parameter.
    ExpertBias { index: i64 },
    /// Every `stride`-th column of the last axis from `offset` (gpt-oss's interleaved
    /// `gate_up_proj`: the gate in the even columns, up in the odd ones).
    Columns { offset: i64, stride: i64 },
    /// A block of rows of a fused `[total, fan_in]` weight (Phi-3's `qkv_proj`, `gate_up_proj`):
    /// rows `start..start + len`, then laid out as [`Transform::Linear`].
    Rows {
        start: i64,
        len: i64,
        total: i64,
        fan_in: i64,
    },
}

/// Applies a transform, producing a tensor of `shape`.
pub fn to_pzt(t: &Tensor, tr: Transform, shape: &[i64], a: &Arch) -> Result<Tensor> {
    let (h, d) = (a.decoder.num_heads, a.decoder.head_dim);
    let r = match tr {
        Transform::Same => t.shallow_clone(),
        Transform::Linear(_) | Transform::Router(_) => t
            .f_transpose(0, 1)
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("transpose weight")?,
        // One expert's slice of the parameter (the loader stacks them).
        Transform::Expert { .. } => t
            .f_transpose(0, 1)
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape.get(1..).unwrap_or(&[])))
            .ctx("expert weight")?,
        Transform::ExpertBias { .. } => t
            .f_reshape(shape.get(1..).unwrap_or(&[]))
            .ctx("expert bias")?,
        Transform::PerExpert => t.shallow_clone(),
        Transform::Columns { offset, stride } => {
            let n = t.size().last().copied().unwrap_or(0);
            t.f_slice(-1, offset, n, stride)
                .and_then(|x| x.f_contiguous())
                .and_then(|x| x.f_reshape(shape))
                .ctx("split interleaved weight")?
        }
        Transform::Reshape | Transform::PerHead(_) => t.f_reshape(shape).ctx("reshape")?,
        Transform::PlusOne => t.f_add_scalar(1.0).ctx("norm scale")?,
        Transform::QkvWeight(k) => t
            .f_reshape([h, 3, d, -1])
            .and_then(|x| x.f_select(1, k))
            .and_then(|x| x.f_permute([2, 0, 1]))
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("split fused QKV")?,
        Transform::Rows { start, len, .. } => t
            .f_narrow(0, start, len)
            .and_then(|x| x.f_transpose(0, 1))
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("split fused weight")?,
        Transform::QkvBias(k) => t
            .f_reshape([h, 3, d])
            .and_then(|x| x.f_select(1, k))
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("split fused QKV bias")?,
    };
    Ok(r)
}

/// The HF shape a transform expects, given the parameter's shape (for messages and export).
pub fn hf_shape(tr: Transform, shape: &[i64], a: &Arch) -> Vec<i64> {
    let n: i64 = shape.iter().product();
    match tr {
        Transform::Same | Transform::PlusOne => shape.to_vec(),
        Transform::Linear(i) | Transform::Router(i) => vec![n / i.max(1), i],
        Transform::Expert { fan_in, .. } => {
            let per = n / shape.first().copied().unwrap_or(1).max(1);
            vec![per / fan_in.max(1), fan_in]
        }
        Transform::ExpertBias { .. } => shape.get(1..).unwrap_or(&[]).to_vec(),
        Transform::PerExpert => shape.to_vec(),
        Transform::Columns { stride, .. } => {
            let mut s = shape.to_vec();
            if let Some(l) = s.last_mut() {
                *l *= stride;
            }
            s
        }
        Transform::Reshape => vec![n],
        Transform::PerHead(d) => vec![n / d.max(1), d],
        Transform::QkvWeight(_) => vec![
            3 * a.decoder.num_heads * a.decoder.head_dim,
            a.decoder.d_model,
        ],
        Transform::QkvBias(_) => vec![3 * a.decoder.num_heads * a.decoder.head_dim],
        Transform::Rows { total, fan_in, .. } => vec![total, fan_in],
    }
}

/// Inverse of [`to_pzt`] for the single-tensor transforms.
pub fn to_hf(t: &Tensor, tr: Transform) -> Result<Tensor> {
    let n = t.numel() as i64;
    Ok(match tr {
        Transform::Same => t.shallow_clone(),
        Transform::Linear(i) | Transform::Router(i) => t
            .f_reshape([i, n / i.max(1)])
            .and_then(|x| x.f_transpose(0, 1))
            .and_then(|x| x.f_contiguous())
            .ctx("export weight")?,
        Transform::Reshape => t.f_reshape([n]).ctx("export bias")?,
        Transform::PerHead(d) => t
            .f_reshape([n / d.max(1), d])
            .ctx("export per-head weight")?,
        Transform::PlusOne => t.f_sub_scalar(1.0).ctx("export norm")?,
        Transform::QkvWeight(_) | Transform::QkvBias(_) => t.shallow_clone(),
        // The exporter interleaves the parts.
        Transform::Columns { .. } | Transform::PerExpert => t.shallow_clone(),
        Transform::Expert { index, fan_in } => {
            let e = t.f_select(0, index).ctx("export expert")?;
            let m = e.numel() as i64;
            e.f_reshape([fan_in, m / fan_in.max(1)])
                .and_then(|x| x.f_transpose(0, 1))
                .and_then(|x| x.f_contiguous())
                .ctx("export expert")?
        }
        Transform::ExpertBias { index } => t.f_select(0, index).ctx("export expert bias")?,
        // This part's rows, `[len, fan_in]`; the exporter stacks the parts.
        Transform::Rows { fan_in, .. } => t
            .f_reshape([fan_in, n / fan_in.max(1)])
            .and_then(|x| x.f_transpose(0, 1))
            .and_then(|x| x.f_contiguous())
            .ctx("export fused weight")?,
    })
}
