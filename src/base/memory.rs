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

/// What jemalloc starts with: freed pages stay with the process for the next allocation
/// (`dirty_decay_ms:-1`, `muzzy_decay_ms:-1`): a step frees and allocates the same tensors
/// again, and pages given back would be faulted in again (as fast as pzt's former glibc
/// settings on the training benchmarks). [`return_freed_after`] changes it while running.
/// `MALLOC_CONF` overrides any of it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[no_mangle]
pub static malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a NUL-terminated string that lives forever.
    Some(unsafe { &*c"dirty_decay_ms:-1,muzzy_decay_ms:-1".as_ptr() });

// jemalloc serves every `malloc` of the process (the feature
// `override_allocator_on_supported_platforms`), libtorch's CPU tensors included, so that
// `[train] release_memory` can give freed pages back on a schedule (glibc can only trim, or
// map every large block).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use tikv_jemalloc_sys as _;

/// How long freed memory stays with the process under `[train] release_memory`.
pub const RELEASE_AFTER_MS: isize = 1000;

/// jemalloc's control interface (`mallctl`): reads the setting `name` into `old` and/or writes
/// `new` to it, each a pointer to a value of its type (or null) and that type's size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn control(
    name: &std::ffi::CStr,
    old: (*mut std::ffi::c_void, *mut usize),
    new: (*mut std::ffi::c_void, usize),
) -> Result<(), String> {
    // SAFETY: the name is NUL-terminated; the callers pass pointers to live values of the
    // setting's type with their sizes, or nulls.
    let rc = unsafe { tikv_jemalloc_sys::mallctl(name.as_ptr(), old.0, old.1, new.0, new.1) };
    match rc {
        0 => Ok(()),
        e => Err(format!("allocator setting {name:?}: error {e}")),
    }
}

/// Writes `value` to jemalloc's setting `name`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn write_setting<T>(name: &std::ffi::CStr, mut value: T) -> Result<(), String> {
    let new = ((&mut value as *mut T).cast(), std::mem::size_of::<T>());
    control(name, (std::ptr::null_mut(), std::ptr::null_mut()), new)
}

/// Reads jemalloc's setting `name` (of type `T`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_setting<T: Default>(name: &std::ffi::CStr) -> Result<T, String> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    let old = ((&mut value as *mut T).cast(), &mut len as *mut usize);
    control(name, old, (std::ptr::null_mut(), 0))?;
    Ok(value)
}

/// From now on, memory freed and not reused within `ms` milliseconds goes back to the kernel
/// (jemalloc's decay, run by its background thread), in every arena: a lower peak for a run
/// that must fit, at the cost of faulting pages in again. Off Linux with glibc, nothing.
pub fn return_freed_after(ms: isize) -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        write_setting(c"background_thread", true)?;
        write_setting(c"arenas.dirty_decay_ms", ms)?;
        write_setting(c"arenas.muzzy_decay_ms", 0isize)?;
        let arenas: u32 = read_setting(c"arenas.narenas")?;
        for i in 0..arenas {
            let dirty = std::ffi::CString::new(format!("arena.{i}.dirty_decay_ms"))
                .map_err(|e| e.to_string())?;
            let muzzy = std::ffi::CString::new(format!("arena.{i}.muzzy_decay_ms"))
                .map_err(|e| e.to_string())?;
            // An arena not created yet takes the `arenas.` defaults when it is.
            if write_setting(&dirty, ms).is_ok() {
                write_setting(&muzzy, 0isize)?;
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = ms;
    Ok(())
}

/// The milliseconds after which freed memory goes back (`arenas.dirty_decay_ms`; -1: never),
/// or `None` off Linux with glibc.
pub fn freed_returned_after() -> Option<isize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return read_setting(c"arenas.dirty_decay_ms").ok();
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Returns the memory freed so far to the kernel (jemalloc's purge of every arena), for the
/// phases that free as much as they keep, such as loading a checkpoint tensor by tensor.
pub fn release_freed() {
    // A purge takes and returns nothing; it cannot fail on a valid name.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = control(
        c"arena.4096.purge",
        (std::ptr::null_mut(), std::ptr::null_mut()),
        (std::ptr::null_mut(), 0),
    );
}

/// The least time between two returns of freed memory between steps (see [`BetweenSteps`]).
pub const RETURN_BETWEEN_STEPS_MS: u64 = 1000;

/// The rate at which a step takes returned pages again (a page fault and zeroing each), in
/// bytes a second: about 4 GB/s on the development machine (the QLoRA benchmark's plain LoRA
/// steps, returning about 500 MB after each, took 0.1-0.19 s longer).
const REFAULT_BYTES_PER_S: f64 = 4e9;

/// Returning freed memory may cost at most this share of the time between two returns.
const RETURN_TIME_SHARE: f64 = 0.02;

/// Returns freed memory to the kernel between training steps, as often as its cost allows.
///
/// Between two steps nothing transient is alive: what the step freed is kept by jemalloc
/// (`dirty_decay_ms:-1`) in extents of the sizes it freed, and the next step, allocating in
/// another order, maps new pages beside them; over a few steps the process grows by a step's
/// worth of such pages. Returning them after a step keeps the peak at about one step's: 100-150
/// MB less on the QLoRA benchmark's steps. The next step faults the pages in again: a return of
/// `B` bytes costs about `B /` [`REFAULT_BYTES_PER_S`], so the next return waits until that is
/// at most [`RETURN_TIME_SHARE`] of the time since this one, and at least
/// [`RETURN_BETWEEN_STEPS_MS`] (steps of a few milliseconds returned each time trained 26 %
/// slower). A step that keeps few activations (checkpointing: the QLoRA benchmark's lean steps
/// return about 80 MB) returns after every step of a second or more; a plain one, freeing all
/// its activations (about 500 MB there), every six seconds or so.
pub struct BetweenSteps {
    least: std::time::Duration,
    next: Option<std::time::Instant>,
}

impl BetweenSteps {
    /// Returns freed memory at most once every `least_ms` milliseconds.
    pub fn new(least_ms: u64) -> BetweenSteps {
        BetweenSteps {
            least: std::time::Duration::from_millis(least_ms),
            next: None,
        }
    }

    /// Called when a step has ended: whether freed memory was returned now.
    pub fn step_ended(&mut self) -> bool {
        self.step_ended_at(std::time::Instant::now(), || {
            let before = resident_bytes();
            release_freed();
            before.saturating_sub(resident_bytes())
        })
    }

    /// At `now`, returns freed memory with `release` (which says how many bytes left the
    /// process) when it is due.
    fn step_ended_at(&mut self, now: std::time::Instant, release: impl FnOnce() -> u64) -> bool {
        if self.next.is_some_and(|t| now < t) {
            return false;
        }
        let cost = release() as f64 / REFAULT_BYTES_PER_S;
        let wait = std::time::Duration::from_secs_f64(cost / RETURN_TIME_SHARE);
        self.next = Some(now + wait.max(self.least));
        true
    }
}

/// The process's resident memory in bytes (`/proc/self/statm`), 0 where it cannot be read.
pub fn resident_bytes() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages.saturating_mul(u64::try_from(page).unwrap_or(4096))
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_is_kept_until_asked_to_return_it() {
        // This test process links jemalloc as `pzt` does, with its settings.
        assert_eq!(freed_returned_after(), Some(-1));
        assert_eq!(read_setting::<isize>(c"arena.0.dirty_decay_ms"), Ok(-1));
        assert_eq!(return_freed_after(RELEASE_AFTER_MS), Ok(()));
        assert_eq!(freed_returned_after(), Some(RELEASE_AFTER_MS));
        assert_eq!(read_setting::<isize>(c"arena.0.dirty_decay_ms"), Ok(1000));
        assert_eq!(read_setting::<isize>(c"arena.0.muzzy_decay_ms"), Ok(0));
        assert_eq!(read_setting::<bool>(c"background_thread"), Ok(true));
        // Allocations still work, and a purge returns.
        let v = vec![1u8; 64 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        drop(v);
        release_freed();
    }

    #[test]
    fn freed_memory_goes_back_between_steps_as_often_as_its_cost_allows() {
        let mut b = BetweenSteps::new(1000);
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut returned = 0;
        let mut at = |b: &mut BetweenSteps, t: u64, bytes: u64| {
            b.step_ended_at(t0 + ms(t), || {
                returned += 1;
                bytes
            })
        };
        // Little returned: every second at most.
        assert!(at(&mut b, 0, 10 << 20), "the first step returns");
        assert!(!at(&mut b, 10, 10 << 20));
        assert!(!at(&mut b, 999, 10 << 20));
        assert!(at(&mut b, 1000, 800_000_000));
        // 800 MB cost about 0.2 s to fault in again: the next return waits 10 s.
        assert!(!at(&mut b, 2000, 0));
        assert!(!at(&mut b, 10_999, 0));
        assert!(at(&mut b, 11_000, 0));
        assert!(at(&mut b, 12_000, 0));
        assert_eq!(returned, 4, "released only when due");
    }

    /// What `release_freed` does, seen in the process's resident memory: a freed block of
    /// 256 MiB stays resident until it is returned (other tests of this process allocate
    /// little at a time, and only the drop is asserted).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn returned_memory_leaves_the_process() {
        let v = vec![1u8; 256 << 20];
        assert_eq!(
            v.iter().step_by(4096).map(|&b| b as usize).sum::<usize>(),
            (256 << 20) / 4096
        );
        let with_block = resident_bytes();
        drop(v);
        release_freed();
        let after = resident_bytes();
        assert!(
            with_block.saturating_sub(after) > 200 << 20,
            "resident {with_block} with the block, {after} after returning it"
        );
    }

    #[test]
    fn shapes_are_bounded() {
        assert_eq!(tensor_values(&[2, 3]), Ok(6));
        assert!(tensor_values(&[2, 0]).is_err());
        assert!(tensor_values(&[-4]).is_err());
        assert!(tensor_values(&[1_000_000_000_000, 1_000_000_000_000]).is_err());
    }
}
