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
        Transform::Linear(_) => t
            .f_transpose(0, 1)
            .and_then(|x| x.f_contiguous())
            .and_then(|x| x.f_reshape(shape))
            .ctx("transpose weight")?,
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
        Transform::Linear(i) => vec![n / i.max(1), i],
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
        Transform::Linear(i) => t
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
        // This part's rows, `[len, fan_in]`; the exporter stacks the parts.
        Transform::Rows { fan_in, .. } => t
            .f_reshape([fan_in, n / fan_in.max(1)])
            .and_then(|x| x.f_transpose(0, 1))
            .and_then(|x| x.f_contiguous())
            .ctx("export fused weight")?,
    })
}
