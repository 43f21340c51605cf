//! Safe wrappers over pzt's C++ shim (`csrc/shim.cpp`): libtorch switches that tch 0.24 does not
//! expose. Deterministic algorithms and cuDNN, autocast dtype, scaled-dot-product-attention
//! backend switches, generator state get/set for the CPU and CUDA devices, and draws from a
//! freshly seeded generator that leave the global generators untouched.

mod device;
pub mod dist;
mod grads;
mod profiler;
mod recompute;

pub use device::{auto_device, device_name, devices, parse_device, DeviceError};
pub use grads::{clear_grads, grad_norms};
pub use profiler::Profiler;
pub use recompute::{checkpointed, grad_enabled};

use crate::base::{Error, Result};
use std::ffi::{c_char, CStr};
use tch::{Device, Kind, Tensor};

#[allow(non_camel_case_types)]
type C_tensor = torch_sys::C_tensor;

extern "C" {
    fn pzt_free_error(e: *mut c_char);
    fn pzt_set_deterministic(on: bool, warn_only: bool) -> *mut c_char;
    fn pzt_deterministic_warn_only() -> bool;
    fn pzt_deterministic() -> bool;
    fn pzt_set_cudnn_deterministic(on: bool) -> *mut c_char;
    fn pzt_cudnn_deterministic() -> bool;
    fn pzt_set_autocast(device_type: i32, enabled: bool, scalar_type: i32) -> *mut c_char;
    fn pzt_autocast_enabled(device_type: i32) -> bool;
    fn pzt_autocast_dtype(device_type: i32) -> i32;
    fn pzt_set_sdpa_backends(flash: bool, mem: bool, math: bool, cudnn: bool) -> *mut c_char;
    fn pzt_sdpa_backends(out4: *mut bool);
    fn pzt_rng_get_state(device: i32, out: *mut *mut C_tensor) -> *mut c_char;
    fn pzt_rng_set_state(device: i32, state: *mut C_tensor) -> *mut c_char;
    fn pzt_seeded_random(
        seed: u64,
        kind: i32,
        dims: *const i64,
        ndims: i32,
        scalar_type: i32,
        device: i32,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn pzt_torch_version() -> *const c_char;
    fn pzt_is_meta(t: *mut C_tensor) -> bool;
    fn pzt_meta_empty(
        dims: *const i64,
        ndims: i32,
        scalar_type: i32,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn pzt_to_meta(t: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn pzt_fused_adamw(
        params: *mut *mut C_tensor,
        grads: *mut *mut C_tensor,
        m: *mut *mut C_tensor,
        v: *mut *mut C_tensor,
        n: i32,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
}

/// Whether a tensor lives on the meta device (shapes only, no storage).
pub fn is_meta(t: &Tensor) -> bool {
    let mut h = t.shallow_clone();
    unsafe { pzt_is_meta(h.as_mut_ptr()) }
}

/// An uninitialized meta tensor (no storage is allocated).
pub fn meta_empty(shape: &[i64], kind: Kind) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe {
        pzt_meta_empty(
            shape.as_ptr(),
            shape.len() as i32,
            kind_code(kind),
            &mut out,
        )
    })?;
    if out.is_null() {
        return Err(Error::Shim("no tensor returned".into()));
    }
    // SAFETY: as in rng_state.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Moves `t` to the device of `like` (the meta device included).
pub fn to_device_like(t: &Tensor, like: &Tensor) -> Result<Tensor> {
    if is_meta(like) {
        let mut h = t.shallow_clone();
        let mut out: *mut C_tensor = std::ptr::null_mut();
        check(unsafe { pzt_to_meta(h.as_mut_ptr(), &mut out) })?;
        if out.is_null() {
            return Err(Error::Shim("no tensor returned".into()));
        }
        // SAFETY: as in rng_state.
        Ok(unsafe { Tensor::from_ptr(out) })
    } else {
        t.f_to_device(like.device())
            .map_err(|e| Error::Shim(e.to_string()))
    }
}

fn check(err: *mut c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string malloc'd by the shim.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { pzt_free_error(err) };
    Err(Error::Shim(msg))
}

fn device_code(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(-1),
        Device::Cuda(i) => Ok(i as i32),
        other => Err(Error::Shim(format!("device {other:?} is not supported"))),
    }
}

fn device_type_code(device: Device) -> i32 {
    if device.is_cuda() {
        1
    } else {
        0
    }
}

/// The version of the libtorch pzt is linked against, e.g. "2.11.0".
pub fn torch_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(pzt_torch_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Turns libtorch's deterministic algorithms on or off (errors on ops that have no
/// deterministic implementation when on).
pub fn set_deterministic(on: bool) -> Result<()> {
    check(unsafe { pzt_set_deterministic(on, false) })
}

/// Deterministic algorithms where libtorch has them; ops without one warn (once) instead of
/// failing.
pub fn set_deterministic_warn_only(on: bool) -> Result<()> {
    check(unsafe { pzt_set_deterministic(on, true) })
}

/// Whether deterministic mode only warns.
pub fn deterministic_warn_only() -> bool {
    unsafe { pzt_deterministic_warn_only() }
}

/// Whether deterministic algorithms are on.
pub fn deterministic() -> bool {
    unsafe { pzt_deterministic() }
}

/// Deterministic cuDNN (and cuDNN benchmarking off when on).
pub fn set_cudnn_deterministic(on: bool) -> Result<()> {
    check(unsafe { pzt_set_cudnn_deterministic(on) })
}

/// Whether cuDNN is in deterministic mode.
pub fn cudnn_deterministic() -> bool {
    unsafe { pzt_cudnn_deterministic() }
}

/// Enables autocast for the device type of `device` with `dtype` (e.g. `Kind::BFloat16`), or
/// disables it when `dtype` is `None`.
pub fn set_autocast(device: Device, dtype: Option<Kind>) -> Result<()> {
    let code = dtype.map(kind_code).unwrap_or(-1);
    check(unsafe { pzt_set_autocast(device_type_code(device), dtype.is_some(), code) })
}

/// The autocast dtype of the device type of `device`, when autocast is on.
pub fn autocast(device: Device) -> Option<Kind> {
    let dt = device_type_code(device);
    if unsafe { pzt_autocast_enabled(dt) } {
        kind_from_code(unsafe { pzt_autocast_dtype(dt) })
    } else {
        None
    }
}

/// Which fused scaled-dot-product-attention backends libtorch may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpaBackends {
    pub flash: bool,
    pub mem_efficient: bool,
    pub math: bool,
    pub cudnn: bool,
}

/// Enables or disables SDPA backends.
pub fn set_sdpa_backends(b: SdpaBackends) -> Result<()> {
    check(unsafe { pzt_set_sdpa_backends(b.flash, b.mem_efficient, b.math, b.cudnn) })
}

/// The SDPA backends currently enabled.
pub fn sdpa_backends() -> SdpaBackends {
    let mut out = [false; 4];
    unsafe { pzt_sdpa_backends(out.as_mut_ptr()) };
    SdpaBackends {
        flash: out[0],
        mem_efficient: out[1],
        math: out[2],
        cudnn: out[3],
    }
}

/// A copy of the state of the default generator of `device` (a uint8 tensor).
pub fn rng_state(device: Device) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { pzt_rng_get_state(device_code(device)?, &mut out) })?;
    if out.is_null() {
        return Err(Error::Shim("no generator state returned".into()));
    }
    // SAFETY: the shim returns a heap-allocated torch::Tensor, owned from here on.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Restores the state of the default generator of `device`.
pub fn set_rng_state(device: Device, state: &Tensor) -> Result<()> {
    let mut s = state.shallow_clone();
    check(unsafe { pzt_rng_set_state(device_code(device)?, s.as_mut_ptr()) })
}

/// What [`seeded_random`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Uniform on [0, 1).
    Uniform,
    /// Standard normal.
    Normal,
}

/// Draws a tensor from a fresh generator of `device`'s type seeded with `seed`. The same seed,
/// shape, kind and device type always give the same values; the default generators are not
/// touched.
pub fn seeded_random(
    seed: u64,
    dist: Distribution,
    shape: &[i64],
    kind: Kind,
    device: Device,
) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let d = match dist {
        Distribution::Uniform => 0,
        Distribution::Normal => 1,
    };
    check(unsafe {
        pzt_seeded_random(
            seed,
            d,
            shape.as_ptr(),
            shape.len() as i32,
            kind_code(kind),
            device_code(device)?,
            &mut out,
        )
    })?;
    if out.is_null() {
        return Err(Error::Shim("no tensor returned".into()));
    }
    // SAFETY: as in rng_state.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// c10's ScalarType code of a tch kind.
pub(crate) fn kind_code(kind: Kind) -> i32 {
    match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::ComplexHalf => 8,
        Kind::ComplexFloat => 9,
        Kind::ComplexDouble => 10,
        Kind::Bool => 11,
        Kind::QInt8 => 12,
        Kind::QUInt8 => 13,
        Kind::QInt32 => 14,
        Kind::BFloat16 => 15,
        _ => 6,
    }
}

fn kind_from_code(code: i32) -> Option<Kind> {
    Some(match code {
        0 => Kind::Uint8,
        1 => Kind::Int8,
        2 => Kind::Int16,
        3 => Kind::Int,
        4 => Kind::Int64,
        5 => Kind::Half,
        6 => Kind::Float,
        7 => Kind::Double,
        11 => Kind::Bool,
        15 => Kind::BFloat16,
        _ => return None,
    })
}

/// Hyper-parameters of one fused AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdamW {
    pub step: f64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW step over a group with libtorch's fused kernel (`_fused_adamw_`): parameters and
/// both moments are updated in place. All tensors must share a device and be float32.
pub fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    m: &[Tensor],
    v: &[Tensor],
    h: FusedAdamW,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(Error::Shim(
            "fused_adamw: lists of different lengths".into(),
        ));
    }
    let mut hold: Vec<Tensor> = params
        .iter()
        .chain(grads)
        .chain(m)
        .chain(v)
        .map(|t| t.shallow_clone())
        .collect();
    let mut ptrs: Vec<*mut C_tensor> = hold.iter_mut().map(|t| t.as_mut_ptr()).collect();
    let base = ptrs.as_mut_ptr();
    // SAFETY: four consecutive arrays of n valid tensor handles, alive in `hold` for the call.
    check(unsafe {
        pzt_fused_adamw(
            base,
            base.add(n),
            base.add(2 * n),
            base.add(3 * n),
            n as i32,
            h.step,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
        )
    })
}
