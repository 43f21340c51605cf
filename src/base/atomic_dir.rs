//! Directories written whole or not at all: checkpoints, the prepared-data store and both
//! exports are filled in a temporary directory beside their place (`.tmp-<name>-<pid>`), whose
//! files are synced before it is put in place. A failure, a full disk or Ctrl-C before that
//! leaves the old directory as it was and no temporary one (it is removed when dropped).

use super::outputs;
use super::{Error, Result};
use std::path::{Path, PathBuf};

/// A directory being written.
pub struct AtomicDir {
    target: PathBuf,
    tmp: PathBuf,
    placed: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Syncs a file or directory to disk.
pub fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

impl AtomicDir {
    /// Starts writing `target` (its parent is created when missing).
    pub fn create(target: &Path) -> Result<AtomicDir> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dir".into());
        let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        Ok(AtomicDir {
            target: target.to_path_buf(),
            tmp,
            placed: false,
        })
    }

    /// The temporary directory to write the files into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The files written so far, synced (a crash after the rename must not find them empty).
    fn sync_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = vec![];
        for e in std::fs::read_dir(&self.tmp).map_err(io(&self.tmp))? {
            let p = e.map_err(io(&self.tmp))?.path();
            if p.is_file() {
                sync(&p)?;
                files.push(p);
            }
        }
        files.sort();
        sync(&self.tmp)?;
        Ok(files)
    }

    /// Puts the directory in place, replacing `target` when it exists (the old one is renamed
    /// aside first, so that one rename makes the new one appear), and returns its path.
    pub fn replace(mut self) -> Result<PathBuf> {
        self.sync_files()?;
        let parent = self.tmp.parent().map(Path::to_path_buf).unwrap_or_default();
        if self.target.exists() {
            let name = self
                .target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let old = parent.join(format!(".old-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&self.target, &old).map_err(io(&self.target))?;
            std::fs::rename(&self.tmp, &self.target).map_err(io(&self.tmp))?;
            self.placed = true;
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&self.tmp, &self.target).map_err(io(&self.tmp))?;
            self.placed = true;
        }
        sync(&parent)?;
        Ok(self.target.clone())
    }

    /// Puts the files into `target`, keeping what else it holds: a missing `target` appears
    /// with every file at once; into an existing one each file is renamed in whole (a symlink
    /// there is written through, a FIFO or device refused), in name order.
    pub fn merge(self) -> Result<PathBuf> {
        if !self.target.exists() {
            return self.replace();
        }
        if !self.target.is_dir() {
            return Err(Error::Config(format!(
                "{} exists and is not a directory",
                self.target.display()
            )));
        }
        for f in self.sync_files()? {
            let Some(name) = f.file_name() else { continue };
            outputs::write_with(&self.target.join(name), |t| {
                std::fs::rename(&f, t)
                    .or_else(|_| std::fs::copy(&f, t).map(|_| ()))
                    .map_err(io(t))
            })?;
        }
        Ok(self.target.clone())
    }
}

/// Whatever was not put in place is removed.
impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pzt-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn replace_puts_all_or_nothing_and_merge_keeps_other_files() -> Result<()> {
        let root = scratch("a");
        let target = root.join("out");
        // Dropped before it is placed: nothing appears, nothing is left.
        let d = AtomicDir::create(&target)?;
        std::fs::write(d.path().join("x"), "1").map_err(io(&target))?;
        drop(d);
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(&root).map_err(io(&root))?.count(), 0);
        // Placed: every file at once; replaced: the old files are gone.
        let d = AtomicDir::create(&target)?;
        std::fs::write(d.path().join("x"), "1").map_err(io(&target))?;
        d.replace()?;
        let d = AtomicDir::create(&target)?;
        std::fs::write(d.path().join("y"), "2").map_err(io(&target))?;
        d.replace()?;
        assert!(!target.join("x").exists() && target.join("y").exists());
        // Merged: the user's other files stay.
        std::fs::write(target.join("mine"), "keep").map_err(io(&target))?;
        let d = AtomicDir::create(&target)?;
        std::fs::write(d.path().join("y"), "3").map_err(io(&target))?;
        d.merge()?;
        let read = |n: &str| std::fs::read_to_string(target.join(n)).unwrap_or_default();
        assert_eq!((read("mine").as_str(), read("y").as_str()), ("keep", "3"));
        let left: Vec<_> = std::fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}
