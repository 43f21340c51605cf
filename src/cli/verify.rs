//! `pzt verify CKPT_OR_RUN`: checks checkpoints against their checksums without loading a
//! model.

use super::common::{lib_err, Failure};
use pzt::run::checkpoint::manifest::Verified;
use std::path::{Path, PathBuf};

/// Check a checkpoint (or every checkpoint of a run) against the checksums in its
/// manifest.json: file sizes, each file's and each tensor's CRC-32C, and that state.json is
/// readable and of the directory's step. Exit 0 when all are intact, 2 when one is damaged.
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint directory (`runs/NAME/checkpoints/step-N`), a run directory or its
    /// `checkpoints/` directory.
    path: PathBuf,
}

/// The checkpoints `path` names: itself, or those of the run it is.
fn checkpoints(path: &Path) -> Result<Vec<PathBuf>, Failure> {
    if path.join("state.json").exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let run = if path.file_name().is_some_and(|n| n == "checkpoints") {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    if !path.is_dir() {
        return Err(Failure::BadInput(format!(
            "{}: no such checkpoint or run directory",
            path.display()
        )));
    }
    let all: Vec<PathBuf> = pzt::run::checkpoint::list(&run)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if all.is_empty() {
        return Err(Failure::BadInput(format!(
            "{}: not a checkpoint, and no checkpoints under it",
            path.display()
        )));
    }
    Ok(all)
}

pub fn run(a: Args) -> Result<(), Failure> {
    let all = checkpoints(&a.path)?;
    let mut damaged = vec![];
    for dir in &all {
        match pzt::run::checkpoint::read_state(dir) {
            Ok((_, Verified::Intact { files, bytes })) => println!(
                "ok       {} ({files} files, {})",
                dir.display(),
                pzt::base::text::human_bytes(bytes.min(i64::MAX as u64) as i64)
            ),
            Ok((_, Verified::NoManifest)) => println!(
                "unknown  {} (no manifest.json: written before pzt recorded checksums)",
                dir.display()
            ),
            Err(e) => {
                let m = match lib_err(e) {
                    Failure::BadInput(m)
                    | Failure::Rendered(m)
                    | Failure::Run(m)
                    | Failure::Expectation(m) => m,
                    Failure::Exit(c) => format!("exit code {c}"),
                };
                // `checkpoint DIR is damaged: WHY` -> `damaged  DIR: WHY`.
                let why = m
                    .strip_prefix(&format!("checkpoint {} is ", dir.display()))
                    .map(|r| r.strip_prefix("damaged: ").unwrap_or(r))
                    .unwrap_or(&m);
                println!("damaged  {}: {why}", dir.display());
                damaged.push(m.clone());
            }
        }
    }
    match damaged.len() {
        0 => Ok(()),
        n => Err(Failure::BadInput(format!(
            "{n} of {} checkpoints damaged:\n  {}",
            all.len(),
            damaged.join("\n  ")
        ))),
    }
}
