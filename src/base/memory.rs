//! What the machine can hold: sizes are checked against it before anything is allocated, so
//! an absurd model or batch is refused with a message instead of aborting the process.

/// The most values one tensor that pzt allocates may hold (2^40, terabytes at any dtype):
/// beyond what any machine holds, and well inside `i64`.
pub const MAX_TENSOR_VALUES: i64 = 1 << 40;

/// Bytes of memory the system can still give this process: `MemAvailable` plus free swap
/// from `/proc/meminfo`, or `None` where that is not known.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

/// The number of values of `shape`, or a message when a dimension is below 1 or the count
/// is beyond [`MAX_TENSOR_VALUES`].
pub fn tensor_values(shape: &[i64]) -> Result<i64, String> {
    let mut n: i64 = 1;
    for &d in shape {
        if d < 1 {
            return Err(format!("shape {shape:?} has a dimension below 1"));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_VALUES)
            .ok_or_else(|| {
                format!("shape {shape:?} holds more than {MAX_TENSOR_VALUES} values, more than pzt accepts")
            })?;
    }
    Ok(n)
}

/// glibc malloc settings pzt starts with (see [`tune_allocator`]): blocks up to 32 MiB come
/// from the heap instead of fresh `mmap`s, and up to 256 MiB of freed heap top is kept.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
pub const TRIM_THRESHOLD: i32 = 256 << 20;
pub const TOP_PAD: i32 = 64 << 20;

/// Keeps freed tensor memory for reuse instead of returning it to the kernel and faulting it
/// back in at the next step. libtorch allocates every CPU tensor with `malloc`; with glibc's
/// defaults the many megabyte-sized activations and gradients of a training step are `mmap`ed
/// and unmapped each time, and a tenth of the CPU time goes to page faults. Fixed thresholds
/// ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`], [`TOP_PAD`]) serve them from the heap. Nothing
/// is changed when the user set any `MALLOC_*_` variable or `GLIBC_TUNABLES`, or off glibc.
/// Returns whether the settings were applied.
pub fn tune_allocator() -> bool {
    let user_set = std::env::vars_os().any(|(k, _)| {
        let k = k.to_string_lossy();
        k == "GLIBC_TUNABLES" || (k.starts_with("MALLOC_") && k.ends_with('_'))
    });
    if user_set {
        return false;
    }
    apply_malloc_settings()
}

/// Returns the heap memory freed so far to the kernel (glibc's `malloc_trim`), for the phases
/// that free as much as they keep, such as loading a checkpoint tensor by tensor: with the
/// settings of [`tune_allocator`] that memory would otherwise stay in the process.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply_malloc_settings() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply_malloc_settings() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_bounded() {
        assert_eq!(tensor_values(&[2, 3]), Ok(6));
        assert!(tensor_values(&[2, 0]).is_err());
        assert!(tensor_values(&[-4]).is_err());
        assert!(tensor_values(&[1_000_000_000_000, 1_000_000_000_000]).is_err());
    }
}
