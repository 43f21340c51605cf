//! libtorch's operator profiler (Kineto, the one behind `torch.profiler`), through the shim:
//! [`Profiler::start`] records every operator libtorch runs (forward and backward) until
//! [`Profiler::stop`], which writes a Chrome trace and returns tables of the operators by self
//! time.

use super::check;
use crate::base::{Error, Result};
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

extern "C" {
    fn pzt_profiler_start(shapes: bool) -> *mut c_char;
    fn pzt_profiler_stop(path: *const c_char, top: i32, report: *mut *mut c_char) -> *mut c_char;
    fn pzt_free_error(e: *mut c_char);
}

/// A running profiler; [`Profiler::stop`] ends it (dropping it stops it without a trace).
pub struct Profiler {
    running: bool,
}

impl Profiler {
    /// Starts recording operators (with their input shapes when `shapes`).
    pub fn start(shapes: bool) -> Result<Profiler> {
        check(unsafe { pzt_profiler_start(shapes) })?;
        Ok(Profiler { running: true })
    }

    /// Stops recording; writes the Chrome trace to `trace` (when given) and returns two
    /// markdown tables of the `top` operators by self time: by name, and by name and input
    /// shapes.
    pub fn stop(mut self, trace: Option<&Path>, top: usize) -> Result<String> {
        self.running = false;
        let path =
            match trace {
                Some(p) => Some(CString::new(p.to_string_lossy().as_bytes()).map_err(|_| {
                    Error::Config(format!("{}: a path with a NUL byte", p.display()))
                })?),
                None => None,
            };
        let mut report: *mut c_char = std::ptr::null_mut();
        let top = i32::try_from(top).unwrap_or(i32::MAX);
        check(unsafe {
            pzt_profiler_stop(
                path.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                top,
                &mut report,
            )
        })?;
        if report.is_null() {
            return Ok(String::new());
        }
        // SAFETY: a non-null report is a NUL-terminated string malloc'd by the shim.
        let text = unsafe { CStr::from_ptr(report) }
            .to_string_lossy()
            .into_owned();
        unsafe { pzt_free_error(report) };
        Ok(text)
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.running {
            let mut report: *mut c_char = std::ptr::null_mut();
            let err = unsafe { pzt_profiler_stop(std::ptr::null(), 0, &mut report) };
            for p in [err, report] {
                if !p.is_null() {
                    unsafe { pzt_free_error(p) };
                }
            }
        }
    }
}
