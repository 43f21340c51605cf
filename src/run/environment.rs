//! `environment.jsonl` in the run directory: one line per start of `pzt train` (time, versions,
//! device, threads, world size, and the environment variables that change libtorch's speed).

use crate::base::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The environment variables that change how fast (not what) libtorch computes: OpenMP's
/// waiting and thread settings and the allocator's settings (jemalloc's `MALLOC_CONF`, glibc's
/// tunables), as this process sees them.
fn threading_env() -> serde_json::Map<String, Value> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("OMP_")
                || k.starts_with("GOMP_")
                || k.starts_with("MKL_")
                || (k.starts_with("MALLOC_") && k.ends_with('_'))
                || k == "GLIBC_TUNABLES"
                || k == "MALLOC_CONF"
        })
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// `world` is the data-parallel world size and the gradient group's backend (`1, "none"` for
/// one process).
pub fn record_environment(
    out_dir: &Path,
    step: u64,
    device: &str,
    world: (usize, &str),
) -> Result<()> {
    use std::io::Write;
    let path = out_dir.join("environment.jsonl");
    let line = json!({
        "time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "pzt": env!("CARGO_PKG_VERSION"),
        "libtorch": crate::backend::torch_version(),
        "device": device,
        "threads": tch::get_num_threads(),
        "start_step": step,
        "world_size": world.0,
        "distributed_backend": world.1,
        "env": threading_env(),
        // How long freed memory stays with the process during a step (jemalloc's decay; -1:
        // until the step ends, `[train] release_memory` makes it 1000).
        "freed_memory_kept_ms": crate::base::memory::freed_returned_after(),
    });
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Err(Error::BadFile {
            path: path.display().to_string(),
            line: None,
            message: "not a regular file".into(),
        });
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    writeln!(f, "{line}").map_err(io)
}
