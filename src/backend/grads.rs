//! Gradient housekeeping through the shim: dropping gradients (`set_to_none`) and their norms
//! with one host transfer.

use super::check;
use crate::base::Result;
use std::ffi::c_char;
use tch::Tensor;

#[allow(non_camel_case_types)]
type C_tensor = torch_sys::C_tensor;

extern "C" {
    fn pzt_clear_grads(params: *mut *mut C_tensor, n: i32) -> *mut c_char;
    fn pzt_grad_norms(grads: *mut *mut C_tensor, n: i32, out: *mut f64) -> *mut c_char;
}

fn handles(ts: &[Tensor]) -> (Vec<Tensor>, Vec<*mut C_tensor>) {
    let mut hold: Vec<Tensor> = ts.iter().map(|t| t.shallow_clone()).collect();
    let ptrs = hold.iter_mut().map(|t| t.as_mut_ptr()).collect();
    (hold, ptrs)
}

/// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`): nothing is
/// filled with zeros, and the next backward gives each parameter its gradient buffer.
pub fn clear_grads(params: &[Tensor]) -> Result<()> {
    let (_hold, mut ptrs) = handles(params);
    // SAFETY: `ptrs` are valid tensor handles, alive in `_hold` for the call.
    check(unsafe { pzt_clear_grads(ptrs.as_mut_ptr(), ptrs.len() as i32) })
}

/// The L2 norm of each gradient (in float32 for float32 and narrower gradients, as
/// `torch.nn.utils.clip_grad_norm_` computes them), read back in one transfer.
pub fn grad_norms(grads: &[Tensor]) -> Result<Vec<f64>> {
    let (_hold, mut ptrs) = handles(grads);
    let mut out = vec![0f64; ptrs.len()];
    // SAFETY: `ptrs` are valid handles alive for the call; `out` has room for one per handle.
    check(unsafe { pzt_grad_norms(ptrs.as_mut_ptr(), ptrs.len() as i32, out.as_mut_ptr()) })?;
    Ok(out)
}
