//! Writing a command's output files without losing anything.
//!
//! Two rules, for every file a command writes at a path the user chose:
//! - an output never lands on one of the command's inputs, or on another of its outputs: paths
//!   are compared where they lead (symlinks followed, and the same file under two names, a hard
//!   link, found by device and inode), and an existing file inside an input directory (a model
//!   or checkpoint directory) counts as an input;
//! - a target that exists and is not a regular file (a FIFO, a device such as `/dev/full`, a
//!   socket, a directory) is refused, never replaced; a symlink to a regular file is written
//!   through (the link stays, its target gets the new content).
//!
//! Writes are atomic: a temporary file beside the target, synced, then renamed over it, so a
//! crash or a full disk leaves the previous file whole (and the temporary file is removed).

use super::error::io_message;
use super::{Error, Result};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Where `path` leads: symlinks followed as far as the path exists, the rest appended and
/// normalized (`.` dropped, `..` taken off).
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    // A dangling symlink leads to its target.
    if let Ok(t) = std::fs::read_link(path) {
        let base = path.parent().unwrap_or(Path::new("."));
        let target = if t.is_absolute() { t } else { base.join(t) };
        if target != path {
            return resolve(&target);
        }
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    // The longest prefix that exists, canonicalized, and the rest appended.
    let mut rest: Vec<PathBuf> = vec![];
    let mut head = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(head) {
            let mut out = c;
            for part in rest.iter().rev() {
                push_normal(&mut out, part);
            }
            return out;
        }
        match (head.parent(), head.file_name()) {
            (Some(p), Some(name)) => {
                rest.push(PathBuf::from(name));
                head = p;
            }
            _ => return abs,
        }
    }
}

fn push_normal(out: &mut PathBuf, part: &Path) {
    for c in part.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
}

/// The file identity (device, inode) of an existing path, links followed.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether writing `out` would replace or change the input `input`: the same file (by path or
/// identity), or an existing file inside the input directory.
fn lands_on(out: &Path, input: &Path) -> bool {
    let (o, i) = (resolve(out), resolve(input));
    if o == i {
        return true;
    }
    if let (Some(a), Some(b)) = (identity(&o), identity(&i)) {
        if a == b {
            return true;
        }
    }
    if i.is_dir() && o.starts_with(&i) && o.exists() {
        return true;
    }
    // A hard link to a file inside an input directory.
    match std::fs::metadata(&o) {
        Ok(m) if m.nlink() > 1 && i.is_dir() => holds(&i, (m.dev(), m.ino()), 4, &mut 20_000),
        _ => false,
    }
}

/// Whether the directory `dir` holds (up to `depth` levels down, looking at `budget` entries at
/// most) the file with identity `id`.
fn holds(dir: &Path, id: (u64, u64), depth: usize, budget: &mut usize) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.filter_map(|e| e.ok()) {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() && (m.dev(), m.ino()) == id {
            return true;
        }
        if m.is_dir() && depth > 0 && holds(&e.path(), id, depth - 1, budget) {
            return true;
        }
    }
    false
}

/// A command's inputs and the output files it is about to write, checked against each other.
#[derive(Clone, Default)]
pub struct Outputs {
    inputs: Vec<PathBuf>,
    outputs: Vec<(String, PathBuf)>,
    /// The outputs' directories are created by the command (they need not exist yet).
    new_dirs: bool,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// An input file or directory (a model, a recipe, a data file, a run directory).
    pub fn input(mut self, path: impl AsRef<Path>) -> Outputs {
        self.inputs.push(path.as_ref().to_path_buf());
        self
    }

    /// Every input of a list.
    pub fn inputs<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Outputs {
        self.inputs
            .extend(paths.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    /// An output file, with the flag that names it in messages (e.g. `--out`).
    pub fn output(mut self, flag: &str, path: impl AsRef<Path>) -> Outputs {
        self.outputs
            .push((flag.to_string(), path.as_ref().to_path_buf()));
        self
    }

    /// The command creates the directories of its outputs (`pzt isolate --out DIR`).
    pub fn in_new_dirs(mut self) -> Outputs {
        self.new_dirs = true;
        self
    }

    /// An output file when it is given.
    pub fn output_opt(self, flag: &str, path: Option<impl AsRef<Path>>) -> Outputs {
        match path {
            Some(p) => self.output(flag, p),
            None => self,
        }
    }

    /// Refuses (bad input) an output that lands on an input or on another output, or whose
    /// target exists and is not a regular file.
    pub fn check(&self) -> Result<()> {
        for (k, (flag, out)) in self.outputs.iter().enumerate() {
            check_kind(flag, out)?;
            if !self.new_dirs {
                check_parent(flag, out)?;
            }
            if let Some(i) = self.inputs.iter().find(|i| lands_on(out, i)) {
                let what = if resolve(i).is_dir() && resolve(out) != resolve(i) {
                    format!("a file of the input directory {}", i.display())
                } else {
                    format!("the input {}", i.display())
                };
                return Err(Error::Config(format!(
                    "{flag} {}: that is {what}, which would be overwritten; write the output elsewhere",
                    out.display()
                )));
            }
            for (flag2, out2) in &self.outputs[..k] {
                if resolve(out) == resolve(out2)
                    || identity(out).is_some_and(|a| identity(out2) == Some(a))
                {
                    return Err(Error::Config(format!(
                        "{flag} {} and {flag2} {} are the same file; give two different files",
                        out.display(),
                        out2.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Refuses a target that exists and is not a regular file, or whose directory does not exist.
pub fn check_target(flag: &str, out: &Path) -> Result<()> {
    check_kind(flag, out)?;
    check_parent(flag, out)
}

/// Refuses a target that exists and is not a regular file.
fn check_kind(flag: &str, out: &Path) -> Result<()> {
    let shown = out.display();
    let target = resolve(out);
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => Err(Error::Config(format!(
            "{flag} {shown} is a directory; give a file name"
        ))),
        Ok(m) if !m.is_file() => Err(Error::Config(format!(
            "{flag} {shown} exists and is not a regular file (a FIFO, a device or a socket); pzt does not replace it: give a file name"
        ))),
        _ => Ok(()),
    }
}

/// Refuses a target whose directory does not exist.
fn check_parent(flag: &str, out: &Path) -> Result<()> {
    let shown = out.display();
    let target = resolve(out);
    let parent = target.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(Error::Config(format!(
            "{flag} {shown}: the directory {} does not exist",
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .display()
        )));
    }
    Ok(())
}

/// Writes `path` atomically with `write`, which fills the temporary file whose path it is given:
/// a symlink is written through, a target that is not a regular file is refused, and on any
/// failure the temporary file is removed and the old file stays as it was.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_target("output", path)?;
    let target = resolve(path);
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let done = write(&tmp)
        .and_then(|_| super::atomic_dir::sync(&tmp))
        .and_then(|_| {
            // A FIFO or device that appeared meanwhile is still not replaced.
            check_target("output", &target)?;
            std::fs::rename(&tmp, &target).map_err(|source| Error::Io {
                path: target.display().to_string(),
                source,
            })
        });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display().to_string();
    write_with(path, |tmp| {
        let mut f =
            std::fs::File::create(tmp).map_err(|e| Error::Config(io_message(&shown, &e)))?;
        f.write_all(bytes)
            .map_err(|e| Error::Config(io_message(&shown, &e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pzt-outputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(&d);
        d
    }

    #[test]
    fn an_output_on_an_input_is_refused_however_it_is_named() -> Result<()> {
        let d = tmpdir("same");
        let model = d.join("model");
        std::fs::create_dir_all(&model).map_err(|e| Error::Config(e.to_string()))?;
        let w = model.join("model.safetensors");
        std::fs::write(&w, b"weights").map_err(|e| Error::Config(e.to_string()))?;
        std::os::unix::fs::symlink(&w, d.join("link")).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::hard_link(&w, d.join("hard")).map_err(|e| Error::Config(e.to_string()))?;
        for out in [
            w.clone(),
            model.join("./sub/../model.safetensors"),
            d.join("link"),
            d.join("hard"),
        ] {
            let r = Outputs::new().input(&model).output("--out", &out).check();
            assert!(r.is_err(), "{} was accepted", out.display());
        }
        // A new file inside the model directory, or one beside it, is fine.
        Outputs::new()
            .input(&model)
            .output("--out", model.join("new.safetensors"))
            .output("--html", d.join("page.html"))
            .check()?;
        // Two outputs on one file are refused.
        let same = Outputs::new()
            .output("--out", d.join("a"))
            .output("--html", d.join("./a"))
            .check();
        assert!(same.is_err());
        assert_eq!(std::fs::read(&w).ok(), Some(b"weights".to_vec()));
        Ok(())
    }

    #[test]
    fn special_targets_are_refused_and_symlinks_written_through() -> Result<()> {
        let d = tmpdir("special");
        for dev in ["/dev/full", "/dev/null"] {
            assert!(write(Path::new(dev), b"x").is_err(), "{dev}");
        }
        assert!(write(&d, b"x").is_err(), "a directory");
        let target = d.join("target.txt");
        std::fs::write(&target, b"old").map_err(|e| Error::Config(e.to_string()))?;
        let link = d.join("link.txt");
        std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::Config(e.to_string()))?;
        write(&link, b"new")?;
        assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
        assert_eq!(std::fs::read(&target).ok(), Some(b"new".to_vec()));
        // A failed write leaves the old content and no temporary file.
        let r = write_with(&target, |_| Err(Error::Config("no".into())));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&target).ok(), Some(b"new".to_vec()));
        let names: Vec<String> = std::fs::read_dir(&d)
            .map_err(|e| Error::Config(e.to_string()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        Ok(())
    }
}
