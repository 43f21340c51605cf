//! The run lock: one `pzt train` per run directory. The lock is an exclusive `flock(2)` on the
//! file `<out_dir>/.pzt-lock`, which also holds the holder's pid for messages. The kernel
//! grants the lock to one process atomically and releases it when that process ends however it
//! ends, so two trainers starting together cannot both hold it, and a lock left by a killed run
//! (its file stays, unlocked) is free again even when its pid now belongs to another process.
//! With the lock held, crash debris of earlier runs is cleaned: temporary checkpoint
//! directories and checkpoint directories that never got their `state.json`.

use crate::base::{Error, Result};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A held run lock (released when dropped, or when the process ends).
pub struct RunLock {
    path: PathBuf,
    file: std::fs::File,
}

/// Tries to lock `f` (exclusive or shared) without waiting: whether the lock was granted.
fn try_flock(f: &std::fs::File, exclusive: bool) -> std::io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a file descriptor this File owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Whether a `pzt train` holds the lock of the run directory `dir` now.
pub fn held(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(".pzt-lock")) else {
        return false;
    };
    // A shared lock is granted unless a trainer holds the exclusive one.
    !try_flock(&f, false).unwrap_or(true)
}

/// The pid written in a lock file (for messages).
fn holder_pid(f: &mut std::fs::File) -> Option<i32> {
    let mut s = String::new();
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    f.take(64).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl RunLock {
    /// Takes the lock of `out_dir` (which exists).
    pub fn take(out_dir: &Path) -> Result<RunLock> {
        let path = out_dir.join(".pzt-lock");
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        for _ in 0..5 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            if !try_flock(&file, true).map_err(io)? {
                let pid = holder_pid(&mut file)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                return Err(Error::Config(format!(
                    "{} is in use by another `pzt train`{pid}; wait for it to finish or stop it",
                    out_dir.display()
                )));
            }
            // The file may have been removed (a holder releasing it) between our open and our
            // lock: then the lock is on a file nobody else sees; start again.
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)
                .and_then(|_| file.seek(std::io::SeekFrom::Start(0)))
                .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()))
                .and_then(|_| file.sync_all())
                .map_err(io)?;
            return Ok(RunLock { path, file });
        }
        Err(Error::Config(format!(
            "{}: cannot take the run lock {}",
            out_dir.display(),
            path.display()
        )))
    }

    /// Removes what crashed runs left in the checkpoints directory: `.tmp-step-*` and
    /// `.old-step-*` directories, and `step-N` directories without `state.json` (never
    /// complete, never read). Only called with the lock held.
    pub fn clean_debris(&self, checkpoints: &Path) {
        let Ok(rd) = std::fs::read_dir(checkpoints) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let debris = name.starts_with(".tmp-step-")
                || name.starts_with(".old-step-")
                || (name.starts_with("step-") && p.is_dir() && !p.join("state.json").is_file());
            if debris && p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so a trainer that opened it meanwhile sees it was removed
        // and starts again; the lock itself goes with the file descriptor.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}
