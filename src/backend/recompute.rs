//! Activation checkpointing at the autograd level: [`checkpointed`] attaches a segment's output
//! to the graph through a custom autograd function of the shim (`pzt_checkpointed`). Nothing
//! computed inside the segment is kept; in backward the shim re-runs the segment through a Rust
//! callback (with grad enabled and the forward's autocast state) and back-propagates through
//! the recomputed graph into the segment's input and trainable parameters.

use super::{check, C_tensor};
use crate::base::{Error, Result};
use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;
use tch::Tensor;

type SegmentFn = dyn FnMut(Tensor) -> Result<Tensor> + Send;

struct Holder {
    f: Mutex<Box<SegmentFn>>,
}

extern "C" {
    fn pzt_message(s: *const c_char) -> *mut c_char;
    fn pzt_grad_enabled() -> bool;
    fn pzt_checkpointed(
        x: *mut C_tensor,
        params: *mut *mut C_tensor,
        n: i32,
        y: *mut C_tensor,
        f: extern "C" fn(*mut c_void, *mut C_tensor, bool, *mut *mut C_tensor) -> *mut c_char,
        drop: extern "C" fn(*mut c_void),
        data: *mut c_void,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

/// Whether autograd records operations on this thread (libtorch's grad mode).
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { pzt_grad_enabled() }
}

fn message(s: &str) -> *mut c_char {
    let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
    // SAFETY: the shim copies the string into memory it frees itself.
    unsafe { pzt_message(c.as_ptr()) }
}

extern "C" fn call_segment(
    data: *mut c_void,
    x: *mut C_tensor,
    _recompute: bool,
    out: *mut *mut C_tensor,
) -> *mut c_char {
    // SAFETY: `data` is the `Holder` leaked by `checkpointed`, alive until `drop_segment`;
    // `x` is a fresh tensor handle whose ownership the shim hands over.
    let holder = unsafe { &*(data as *const Holder) };
    let x = unsafe { Tensor::from_ptr(x) };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut f = match holder.f.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (f)(x)
    }));
    match run {
        Ok(Ok(mut y)) => {
            // SAFETY: ownership of the handle passes to the shim, which deletes it.
            unsafe { *out = y.as_mut_ptr() };
            std::mem::forget(y);
            std::ptr::null_mut()
        }
        Ok(Err(e)) => message(&format!("recomputing a checkpointed segment: {e}")),
        Err(_) => message("recomputing a checkpointed segment panicked"),
    }
}

extern "C" fn drop_segment(data: *mut c_void) {
    // SAFETY: called exactly once by the shim for the pointer `checkpointed` leaked.
    drop(unsafe { Box::from_raw(data as *mut Holder) });
}

/// Puts `y` (the output of a segment on `x`, computed under no_grad) into the graph so that
/// backward recomputes the segment with `recompute` and propagates into `x` (when it requires
/// grad) and into `params` (the trainable tensors the segment reads).
pub fn checkpointed(
    x: &Tensor,
    params: &[Tensor],
    y: &Tensor,
    recompute: Box<SegmentFn>,
) -> Result<Tensor> {
    let holder = Box::into_raw(Box::new(Holder {
        f: Mutex::new(recompute),
    }));
    let mut xh = x.shallow_clone();
    let mut yh = y.shallow_clone();
    let mut ph: Vec<Tensor> = params.iter().map(|p| p.shallow_clone()).collect();
    let mut ptrs: Vec<*mut C_tensor> = ph.iter_mut().map(|p| p.as_mut_ptr()).collect();
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: the handles live across the call; the shim owns `holder` from here on (it calls
    // `drop_segment` when done with it, on failure too).
    check(unsafe {
        pzt_checkpointed(
            xh.as_mut_ptr(),
            ptrs.as_mut_ptr(),
            ptrs.len() as i32,
            yh.as_mut_ptr(),
            call_segment,
            drop_segment,
            holder as *mut c_void,
            &mut out,
        )
    })?;
    if out.is_null() {
        return Err(Error::Shim("checkpointed: no tensor returned".into()));
    }
    // SAFETY: a fresh handle owned by us.
    Ok(unsafe { Tensor::from_ptr(out) })
}
