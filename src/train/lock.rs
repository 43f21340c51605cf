//! The run lock: one `pzt train` per run directory. The lock is the file `<out_dir>/.pzt-lock`
//! holding the holder's pid, created exclusively. A lock whose process is gone (a run killed
//! with `kill -9`) is taken over; a live one refuses the second run (exit 2). With the lock
//! held, crash debris of earlier runs is cleaned: temporary checkpoint directories and
//! checkpoint directories that never got their `state.json`.

use crate::base::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held run lock (released when dropped).
pub struct RunLock {
    path: PathBuf,
}

pub(super) fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl RunLock {
    /// Takes the lock of `out_dir` (which exists).
    pub fn take(out_dir: &Path) -> Result<RunLock> {
        let path = out_dir.join(".pzt-lock");
        let me = std::process::id();
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(me.to_string().as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|source| Error::Io {
                            path: path.display().to_string(),
                            source,
                        })?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    match holder {
                        Some(pid) if pid as u32 != me && alive(pid) => {
                            return Err(Error::Config(format!(
                                "{} is in use by another `pzt train` (pid {pid}); wait for it to finish or stop it",
                                out_dir.display()
                            )));
                        }
                        // A stale lock (its process is gone) or an unreadable one: take over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(source) => {
                    return Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
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
        let mine = std::fs::read_to_string(&self.path)
            .ok()
            .is_some_and(|s| s.trim() == std::process::id().to_string());
        if mine {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
