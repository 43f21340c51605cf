//! libtorch's distributed engine (c10d) through the shim (`csrc/dist.cpp`): a TCP key-value
//! store for the rendezvous and a Gloo process group whose all-reduce packs tensors into flat
//! buckets.

use super::check;
use crate::base::{Error, Result};
use std::ffi::{c_char, c_void, CString};
use std::time::Duration;
use tch::Tensor;

#[allow(non_camel_case_types)]
type C_tensor = torch_sys::C_tensor;

extern "C" {
    fn pzt_store_new(
        host: *const c_char,
        port: i32,
        server: bool,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn pzt_store_port(s: *mut c_void) -> i32;
    fn pzt_store_free(s: *mut c_void);
    fn pzt_group_new(
        s: *mut c_void,
        rank: i32,
        size: i32,
        timeout_ms: i64,
        iface: *const c_char,
        host: *const c_char,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn pzt_group_free(g: *mut c_void);
    fn pzt_group_allreduce(
        g: *mut c_void,
        ts: *mut *mut C_tensor,
        n: i32,
        op: i32,
        bucket_bytes: i64,
    ) -> *mut c_char;
    fn pzt_group_barrier(g: *mut c_void) -> *mut c_char;
    fn pzt_quiet_c10d();
    fn pzt_reducer_new(
        g: *mut c_void,
        params: *mut *mut C_tensor,
        n: i32,
        bucket_bytes: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn pzt_reducer_arm(r: *mut c_void);
    fn pzt_reducer_finish(r: *mut c_void) -> *mut c_char;
    fn pzt_reducer_free(r: *mut c_void);
    fn pzt_reducer_counts(r: *mut c_void, early: *mut i64, total: *mut i64);
}

#[cfg(pzt_has_nccl)]
extern "C" {
    fn pzt_group_new_nccl(
        s: *mut c_void,
        rank: i32,
        size: i32,
        timeout_ms: i64,
        device: i32,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// Whether this build has libtorch's NCCL process group (the CUDA wheel, with CUDA's headers
/// at build time).
pub const HAS_NCCL: bool = cfg!(pzt_has_nccl);

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Config(format!("{what} `{s}` holds a NUL byte")))
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A c10d `TCPStore`: the server (which listens) or a client of one.
pub struct Store {
    raw: *mut c_void,
}

impl Store {
    /// Listens on `host:port` (port 0: a free port, see [`Store::port`]) or, with `server`
    /// false, connects to the store there (retrying until `timeout`). Keys are prefixed with
    /// `prefix`.
    pub fn new(
        host: &str,
        port: u16,
        server: bool,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store> {
        let (h, p) = (c_string("host", host)?, c_string("prefix", prefix)?);
        // SAFETY: sets a logging level; no arguments.
        unsafe { pzt_quiet_c10d() };
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C strings for the call; `raw` receives a new store on success.
        check(unsafe {
            pzt_store_new(
                h.as_ptr(),
                i32::from(port),
                server,
                millis(timeout),
                p.as_ptr(),
                &mut raw,
            )
        })?;
        Ok(Store { raw })
    }

    /// [`Store::new`] that gives up after `timeout` (a server that accepts but never answers
    /// would hold a client forever) or as soon as a stop is asked for (Ctrl-C, SIGTERM): the
    /// store is made on a helper thread while this one waits.
    pub fn new_bounded(
        host: &str,
        port: u16,
        server: bool,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store> {
        let (host_s, prefix_s) = (host.to_string(), prefix.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The pointer crosses threads as an address; only this function turns it back.
            let r = Store::new(&host_s, port, server, timeout, &prefix_s).map(|s| {
                let raw = s.raw as usize;
                std::mem::forget(s);
                raw
            });
            if let Err(std::sync::mpsc::SendError(Ok(raw))) = tx.send(r) {
                // Nobody waits any more: free the store.
                drop(Store {
                    raw: raw as *mut c_void,
                });
            }
        });
        let deadline = std::time::Instant::now() + timeout + Duration::from_secs(5);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    return r.map(|raw| Store {
                        raw: raw as *mut c_void,
                    })
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Run(
                        "the store's thread ended without an answer".into(),
                    ))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if crate::base::interrupt::requested() {
                return Err(Error::Run("stopped while waiting for the store".into()));
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Run(format!(
                    "no store answered within distributed_timeout_s ({} s): something listens there, but it is not a c10d TCPStore",
                    timeout.as_secs()
                )));
            }
        }
    }

    /// The port the store listens on (or is connected to).
    pub fn port(&self) -> u16 {
        // SAFETY: `raw` is a live store.
        u16::try_from(unsafe { pzt_store_port(self.raw) }).unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `pzt_store_new` and is freed once.
        unsafe { pzt_store_free(self.raw) }
    }
}

/// How an all-reduce combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

/// Where a Gloo process group's transport binds.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// A network interface name (like `GLOO_SOCKET_IFNAME`).
    pub iface: Option<String>,
    /// A host name or address of this machine.
    pub host: Option<String>,
}

/// A c10d Gloo process group: this process is `rank` of `size`.
pub struct Group {
    raw: *mut c_void,
}

impl Group {
    /// Joins the group over `store`, its keys under `prefix` (every rank must call this; it returns when all have).
    pub fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        timeout: Duration,
        transport: &Transport,
        prefix: &str,
    ) -> Result<Group> {
        let prefix = c_string("prefix", prefix)?;
        let iface = c_string("interface", transport.iface.as_deref().unwrap_or(""))?;
        let host = c_string("host", transport.host.as_deref().unwrap_or(""))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a live store, valid C strings; `raw` receives a new group on success.
        check(unsafe {
            pzt_group_new(
                store.raw,
                rank as i32,
                size as i32,
                millis(timeout),
                iface.as_ptr(),
                host.as_ptr(),
                prefix.as_ptr(),
                &mut raw,
            )
        })?;
        Ok(Group { raw })
    }

    /// Joins an NCCL group over `store`, this rank on CUDA device `device`.
    #[cfg(pzt_has_nccl)]
    pub fn nccl(
        store: &Store,
        rank: usize,
        size: usize,
        timeout: Duration,
        device: usize,
    ) -> Result<Group> {
        let prefix = c_string("prefix", "nccl")?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a live store; `raw` receives a new group on success.
        check(unsafe {
            pzt_group_new_nccl(
                store.raw,
                rank as i32,
                size as i32,
                millis(timeout),
                device as i32,
                prefix.as_ptr(),
                &mut raw,
            )
        })?;
        Ok(Group { raw })
    }

    /// Without NCCL in this build: an error that says so.
    #[cfg(not(pzt_has_nccl))]
    pub fn nccl(
        _store: &Store,
        _rank: usize,
        _size: usize,
        _timeout: Duration,
        _device: usize,
    ) -> Result<Group> {
        Err(Error::Config(
            "this pzt was built without NCCL (it needs the CUDA wheel of torch and CUDA's header \
             wheels at build time: run scripts/bootstrap.sh, then rebuild); use \
             distributed_backend = \"gloo\""
                .into(),
        ))
    }

    /// All-reduces `ts` in place, packed into flat buckets of at most `bucket_bytes`.
    pub fn all_reduce(&self, ts: &[Tensor], op: ReduceOp, bucket_bytes: i64) -> Result<()> {
        if ts.is_empty() {
            return Ok(());
        }
        let mut hold: Vec<Tensor> = ts.iter().map(|t| t.shallow_clone()).collect();
        let mut ptrs: Vec<*mut C_tensor> = hold.iter_mut().map(|t| t.as_mut_ptr()).collect();
        // SAFETY: a live group; `ptrs` are valid tensor handles alive in `hold` for the call.
        check(unsafe {
            pzt_group_allreduce(
                self.raw,
                ptrs.as_mut_ptr(),
                ptrs.len() as i32,
                op as i32,
                bucket_bytes,
            )
        })
    }

    /// Waits until every rank has reached this point.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a live group.
        check(unsafe { pzt_group_barrier(self.raw) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `pzt_group_new` and is freed once.
        unsafe { pzt_group_free(self.raw) }
    }
}

/// Sums the gradients of a set of parameters over a group while the backward pass runs:
/// a post-accumulate-grad hook on each parameter launches a bucket's all-reduce once all of
/// its gradients are there (buckets in reverse parameter order, launched in bucket order).
pub struct Reducer {
    raw: *mut c_void,
}

impl Reducer {
    /// Hooks `params` (leaf tensors that require grad) for `group`.
    pub fn new(group: &Group, params: &[Tensor], bucket_bytes: i64) -> Result<Reducer> {
        let mut hold: Vec<Tensor> = params.iter().map(|t| t.shallow_clone()).collect();
        let mut ptrs: Vec<*mut C_tensor> = hold.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let mut raw = std::ptr::null_mut();
        // SAFETY: a live group; valid tensor handles alive in `hold` for the call (the shim
        // keeps its own references); `raw` receives the reducer.
        check(unsafe {
            pzt_reducer_new(
                group.raw,
                ptrs.as_mut_ptr(),
                ptrs.len() as i32,
                bucket_bytes,
                &mut raw,
            )
        })?;
        Ok(Reducer { raw })
    }

    /// The next backward pass's gradients are reduced as they arrive.
    pub fn arm(&self) {
        // SAFETY: a live reducer.
        unsafe { pzt_reducer_arm(self.raw) }
    }

    /// After that backward pass: launches what is left, waits, and writes the sums into the
    /// gradients.
    pub fn finish(&self) -> Result<()> {
        // SAFETY: a live reducer.
        check(unsafe { pzt_reducer_finish(self.raw) })
    }
}

impl Reducer {
    /// How many buckets the last armed backward pass launched while it ran, and how many
    /// buckets there are.
    pub fn counts(&self) -> (usize, usize) {
        let (mut early, mut total) = (0i64, 0i64);
        // SAFETY: a live reducer; two out-pointers.
        unsafe { pzt_reducer_counts(self.raw, &mut early, &mut total) };
        (early.max(0) as usize, total.max(0) as usize)
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `pzt_reducer_new` and is freed once.
        unsafe { pzt_reducer_free(self.raw) }
    }
}
