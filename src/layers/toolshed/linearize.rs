//! `LinearizeAndAdjust` (Penzai's `model_rewiring.LinearizeAndAdjust`): a layer replaced by its
//! linear approximation around a point.
//!
//! With `p = linearize_around(x)` and `e = evaluate_at(x)` (two sublayers on the same input),
//! the output is
//!
//! ```text
//! f(p) + J_f(p) · (e − p)          f = target
//! ```
//!
//! the first-order Taylor expansion of `target` at `p`, evaluated at `e`. When both sublayers
//! give the same value the output is `target(x)`. The Jacobian-vector product comes from a
//! double backward pass (the transpose of a vector-Jacobian product): with `u` a zero tensor
//! shaped like `f(p)`, `g(u) = J_fᵀ u` is linear in `u`, so `∂/∂u ⟨g(u), v⟩ = J_f v`. It runs
//! with gradients on (also under `no_grad`) and with only the math attention backend enabled
//! (fused attention kernels have no double backward). Gradients of the whole flow into the
//! sublayers' parameters when the caller records them. `p` and `e` must be floating-point
//! tensors with the same axes.

use crate::backend::{grad_enabled, sdpa_backends, set_sdpa_backends, SdpaBackends};
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::tree::{ChildLayout, Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// `target` linearized around `linearize_around(x)`, evaluated at `evaluate_at(x)`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinearizeAndAdjust {}

impl LinearizeAndAdjust {
    /// The node with its three sublayers.
    pub fn build(linearize_around: Node, evaluate_at: Node, target: Node) -> Node {
        Node::new(LinearizeAndAdjust {}).with_children(vec![
            ("linearize_around".into(), linearize_around),
            ("evaluate_at".into(), evaluate_at),
            ("target".into(), target),
        ])
    }
}

/// Restores the SDPA backends when dropped.
struct Backends(SdpaBackends);

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = set_sdpa_backends(self.0);
    }
}

/// `(f(p), J_f(p) v)` for `f` = `target` at `p`, tangent `v` (same axes as `p`).
pub fn jvp(
    target: &Node,
    p: &NamedTensor,
    v: &NamedTensor,
    side: &SideInputs,
) -> Result<(NamedTensor, Tensor)> {
    let keep = grad_enabled();
    let _restore = Backends(sdpa_backends());
    set_sdpa_backends(SdpaBackends {
        flash: false,
        mem_efficient: false,
        math: true,
        cudnn: false,
    })?;
    tch::with_grad(|| {
        let pt = p
            .tensor()
            .detach()
            .f_requires_grad_(true)
            .ctx("LinearizeAndAdjust")?;
        let pin = NamedTensor::from_parts(pt.shallow_clone(), p.names().to_vec())?;
        let y = target
            .forward(pin, side)
            .map_err(|e| e.in_child("target"))?
            .into_tensor()
            .map_err(|e| e.in_child("target"))?;
        let yt = y.tensor();
        let u = yt
            .f_zeros_like()
            .and_then(|mut z| z.f_requires_grad_(true))
            .ctx("LinearizeAndAdjust")?;
        // The `0 *` terms keep both inputs in the graph when `f` ignores them.
        let s1 = yt
            .f_mul(&u)
            .and_then(|t| t.f_sum(yt.kind()))
            .and_then(|s| s.f_add(&pt.f_mul_scalar(0.0)?.f_sum(pt.kind())?))
            .ctx("LinearizeAndAdjust: <f(p), u>")?;
        let g = Tensor::f_run_backward(&[&s1], &[&pt], true, true)
            .ctx("LinearizeAndAdjust: the vector-Jacobian product")?
            .remove(0);
        let s2 = g
            .f_mul(v.tensor())
            .and_then(|t| t.f_sum(g.kind()))
            .and_then(|s| s.f_add(&u.f_mul_scalar(0.0)?.f_sum(u.kind())?))
            .ctx("LinearizeAndAdjust: <J^T u, v>")?;
        let jv = Tensor::f_run_backward(&[&s2], &[&u], keep, keep)
            .ctx("LinearizeAndAdjust: the Jacobian-vector product")?
            .remove(0);
        let y = if keep { y } else { y.detach() };
        Ok((y, if keep { jv } else { jv.detach() }))
    })
}

impl Layer for LinearizeAndAdjust {
    crate::layer_common!("LinearizeAndAdjust");
    fn child_layout(&self) -> ChildLayout {
        ChildLayout::Slots {
            names: &["linearize_around", "evaluate_at", "target"],
            wrap: Some("target"),
        }
    }
    fn forward(&self, node: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let p = node
            .call_child("linearize_around", x.clone(), side)?
            .into_tensor()
            .map_err(|e| e.in_child("linearize_around"))?;
        let e = node
            .call_child("evaluate_at", x, side)?
            .into_tensor()
            .map_err(|e| e.in_child("evaluate_at"))?;
        let e = e.order_like(&p).map_err(|_| {
            Error::Axis(format!(
                "LinearizeAndAdjust: linearize_around gives {} and evaluate_at gives {}; they must have the same axes",
                p.describe(),
                e.describe()
            ))
        })?;
        if e.tensor().size() != p.tensor().size() || !crate::base::dtype::is_float(p.kind()) {
            return Err(Error::Axis(format!(
                "LinearizeAndAdjust: linearize_around gives {} and evaluate_at gives {}; they must be floating point with the same shape",
                p.describe(),
                e.describe()
            )));
        }
        let v = e.sub(&p)?;
        let (y, jv) = jvp(node.child("target")?, &p, &v, side)?;
        let out = y
            .tensor()
            .f_add(&jv)
            .ctx("LinearizeAndAdjust: f(p) + J v")?;
        Ok(NamedTensor::from_parts(out, y.names().to_vec())?.into())
    }
}
