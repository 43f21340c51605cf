//! Checkpoint directories on disk: `<out_dir>/checkpoints/step-<N>/` with `model.safetensors` (parameters by their
//! tree labels), `optimizer.safetensors` (optimizer state by `m.<label>` / `v.<label>` /
//! `momentum.<label>`), `state.json` (step, data cursor, RNG states, metrics, and the
//! fingerprint of the frozen base parameters when some are frozen) and `recipe.toml` (the fully
//! resolved recipe). `model.safetensors` holds the trainable parameters only: a LoRA run's
//! adapters (and whatever `[strategy] trainable` names), a full run's every parameter.
//!
//! A checkpoint is written into a temporary directory, every file is fsynced, then the
//! directory is renamed into place and its parent fsynced: a crash at any moment leaves the
//! previous checkpoints intact, and a partial one (a `.tmp-*` directory) is never read.
//! `manifest.json` holds every file's checksums ([`manifest`]); loading verifies them first.

pub mod arrays;
mod base;
pub mod manifest;

pub use base::{base_structure, verify_base, BaseRecord};

use crate::base::atomic_dir::AtomicDir;
use crate::base::{Error, Result, TorchContext};
use crate::params::Parameter;
use crate::tree::Node;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training examples consumed (the data cursor).
    pub cursor: u64,
    /// Optimizer step count (AdamW bias correction).
    pub optimizer_step: i64,
    /// The learning rate of the next step (the schedule position is `step`).
    pub next_lr: f64,
    /// The CPU generator state, hex.
    pub rng_cpu: String,
    /// The last eval metrics.
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The best value of `keep_best` so far and the step it was reached at.
    pub best: Option<(f64, u64)>,
    /// The run seed.
    pub seed: u64,
    /// What the parameters this checkpoint does not hold (frozen ones: a LoRA run's base
    /// model) were; absent when it holds them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRecord>,
    /// The processes of the data-parallel run that wrote it (1: one process).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub world_size: u64,
    /// The CPU generator states of ranks 1 and up, hex (rank 0's is `rng_cpu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rng_ranks: Vec<String>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Loads checkpoint `dir` into the trainable parameters of `tree` and checks its base.
pub fn load_model(dir: &Path, tree: &Node) -> Result<TrainState> {
    let (state, _) = load(dir, &tree.trainable_parameters())?;
    verify_base(dir, &state, tree)?;
    Ok(state)
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The checkpoints directory of a run.
pub fn dir_of(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoints")
}

/// Complete checkpoints of a run, oldest first: `(step, path)`.
pub fn list(out_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir_of(out_dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                    e.path()
                        .join("state.json")
                        .is_file()
                        .then(|| (step, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The newest complete checkpoint.
pub fn latest(out_dir: &Path) -> Option<(u64, PathBuf)> {
    list(out_dir).pop()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// The CPU generator state as hex.
pub fn cpu_rng_hex() -> Result<String> {
    let t = crate::backend::rng_state(tch::Device::Cpu)?;
    let v: Vec<u8> = Vec::<u8>::try_from(&t).ctx("rng state")?;
    Ok(hex(&v))
}

/// Restores the CPU generator state from hex.
pub fn set_cpu_rng_hex(s: &str) -> Result<()> {
    check_rng_hex(s).map_err(|m| Error::Config(format!("checkpoint: {m}")))?;
    let v = unhex(s).ok_or_else(|| Error::Config("checkpoint: bad rng_cpu".into()))?;
    crate::backend::set_rng_state(tch::Device::Cpu, &Tensor::from_slice(&v))
}

/// Checks that `s` is a CPU generator state of this libtorch: hex of the same length as the
/// current state (a truncated one would be rejected by libtorch with its C++ stack).
fn check_rng_hex(s: &str) -> std::result::Result<(), String> {
    let want = cpu_rng_hex().map(|h| h.len()).unwrap_or(s.len());
    if s.len() != want || unhex(s).is_none() {
        return Err(format!(
            "rng_cpu is not a generator state ({} hex digits, expected {want})",
            s.len()
        ));
    }
    Ok(())
}

/// Writes checkpoint `step` atomically and returns its directory.
pub fn save(
    out_dir: &Path,
    state: &TrainState,
    params: &[Parameter],
    optimizer_state: &std::collections::BTreeMap<String, Tensor>,
    recipe_toml: &str,
) -> Result<PathBuf> {
    // A checkpoint is only written when everything in it is finite: a run going bad must not
    // replace (and prune) the good checkpoints it has.
    let finite = |t: &Tensor| -> Result<bool> {
        Ok(t.f_isfinite()
            .and_then(|x| x.f_all())
            .and_then(|x| x.f_int64_value(&[]))
            .ctx("checkpoint")?
            != 0)
    };
    for p in params {
        if crate::base::dtype::is_float(p.kind()) && !finite(&p.value())? {
            return Err(Error::Run(format!(
                "not writing checkpoint step-{}: parameter `{}` holds NaN or infinite values (the earlier checkpoints are kept)",
                state.step,
                p.label()
            )));
        }
    }
    for (k, t) in optimizer_state {
        if crate::base::dtype::is_float(t.kind()) && !finite(t)? {
            return Err(Error::Run(format!(
                "not writing checkpoint step-{}: optimizer state `{k}` holds NaN or infinite values (the earlier checkpoints are kept)",
                state.step
            )));
        }
    }
    let dir = AtomicDir::create(&dir_of(out_dir).join(format!("step-{}", state.step)))?;
    write_files(dir.path(), state, params, optimizer_state, recipe_toml)?;
    dir.replace()
}

fn corrupt(dir: &Path, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("checkpoint {} is unreadable: {why}", dir.display()))
}

/// Verifies checkpoint `dir` against its manifest and reads its `state.json` (whose step must
/// be the directory's), without touching any tensor.
pub fn read_state(dir: &Path) -> Result<(TrainState, manifest::Verified)> {
    let verified = manifest::verify(dir)?;
    let sp = dir.join("state.json");
    let text = crate::base::files::read_small_file(&sp).map_err(|e| corrupt(dir, e.to_string()))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| corrupt(dir, format!("state.json: {e}")))?;
    let named = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse::<u64>().ok());
    if let Some(n) = named.filter(|&n| n != state.step) {
        return Err(corrupt(
            dir,
            format!(
                "state.json says step {}, the directory step {n}; the checkpoint is corrupt",
                state.step
            ),
        ));
    }
    check_rng_hex(&state.rng_cpu).map_err(|m| corrupt(dir, format!("state.json: {m}")))?;
    Ok((state, verified))
}

/// The tensors of a checkpoint's file `name`, by name.
fn read_tensors(dir: &Path, name: &str) -> Result<std::collections::BTreeMap<String, Tensor>> {
    let tensors = Tensor::read_safetensors(dir.join(name)).map_err(|e| {
        corrupt(
            dir,
            format!(
                "{name}: {}",
                crate::base::error::clean_torch_message(&e.to_string())
            ),
        )
    })?;
    Ok(tensors.into_iter().collect())
}

/// A checkpoint of another model or strategy holds other parameters: say so, not that it is
/// damaged.
fn check_holds(
    dir: &Path,
    params: &[Parameter],
    by: &std::collections::BTreeMap<String, Tensor>,
) -> Result<()> {
    let missing: Vec<&str> = params
        .iter()
        .map(|p| p.label())
        .filter(|l| !by.contains_key(*l))
        .collect();
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let more = match missing.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    let held: Vec<&str> = by.keys().take(3).map(String::as_str).collect();
    Err(Error::Config(format!(
        "checkpoint {} was trained with another model or [strategy] than this recipe builds: it holds no `{first}`{more} (it holds `{}`{}); use its own recipe ({}) or train into another out_dir",
        dir.display(),
        held.join("`, `"),
        if by.len() > 3 { ", ..." } else { "" },
        dir.join("recipe.toml").display()
    )))
}

/// Reads a checkpoint's state, and copies its parameters into `params` (by label; every
/// parameter must be present with its shape and finite values). Returns the state and the
/// optimizer tensors. Pass the trainable parameters: a checkpoint holds only those.
pub fn load(dir: &Path, params: &[Parameter]) -> Result<(TrainState, Vec<(String, Tensor)>)> {
    let (state, _) = read_state(dir)?;
    let mut by = read_tensors(dir, "model.safetensors")?;
    check_holds(dir, params, &by)?;
    // Check everything before touching any parameter.
    for p in params {
        let t = by
            .get(p.label())
            .ok_or_else(|| corrupt(dir, format!("model.safetensors has no `{}`", p.label())))?;
        if t.kind() != p.kind() && !crate::base::dtype::is_float(t.kind()) {
            return Err(corrupt(
                dir,
                format!(
                    "`{}` is {:?}, not a floating-point tensor like the parameter",
                    p.label(),
                    t.kind()
                ),
            ));
        }
        if t.size() != p.shape() {
            return Err(corrupt(
                dir,
                format!(
                    "`{}` has shape {:?}, the model {:?}",
                    p.label(),
                    t.size(),
                    p.shape()
                ),
            ));
        }
        let finite = t
            .f_isfinite()
            .and_then(|x| x.f_all())
            .and_then(|x| x.f_int64_value(&[]))
            .ctx("checkpoint")?;
        if finite == 0 {
            return Err(corrupt(
                dir,
                format!("`{}` holds NaN or infinite values", p.label()),
            ));
        }
    }
    for p in params {
        if let Some(t) = by.remove(p.label()) {
            let dev = p.value().device();
            p.copy_from(
                &t.f_to_device(dev)
                    .and_then(|x| x.f_to_kind(p.kind()))
                    .ctx("checkpoint")?,
            )?;
        }
    }
    let op = dir.join("optimizer.safetensors");
    let bytes = std::fs::metadata(&op)
        .map(|m| m.len())
        .map_err(|e| corrupt(dir, format!("optimizer.safetensors: {e}")))?;
    let opt = if bytes <= 16 {
        vec![]
    } else {
        Tensor::read_safetensors(&op).map_err(|e| {
            corrupt(
                dir,
                format!(
                    "optimizer.safetensors: {}",
                    crate::base::error::clean_torch_message(&e.to_string())
                ),
            )
        })?
    };
    Ok((state, opt))
}

/// The files of a checkpoint (besides its manifest).
const FILES: [&str; 4] = [
    "model.safetensors",
    "optimizer.safetensors",
    "recipe.toml",
    "state.json",
];

fn write_files(
    tmp: &Path,
    state: &TrainState,
    params: &[Parameter],
    optimizer_state: &std::collections::BTreeMap<String, Tensor>,
    recipe_toml: &str,
) -> Result<()> {
    let cpu = |t: &Tensor| {
        t.f_detach()
            .and_then(|d| d.f_to_device(tch::Device::Cpu))
            .and_then(|d| d.f_contiguous())
    };
    let model: Vec<(String, Tensor)> = params
        .iter()
        .map(|p| Ok((p.label().to_string(), cpu(&p.value()).ctx("checkpoint")?)))
        .collect::<Result<_>>()?;
    let mp = tmp.join("model.safetensors");
    Tensor::write_safetensors(&model, &mp).ctx(format!("write {}", mp.display()))?;
    let opt: Vec<(String, Tensor)> = optimizer_state
        .iter()
        .map(|(k, t)| Ok((k.clone(), cpu(t).ctx("checkpoint")?)))
        .collect::<Result<_>>()?;
    let op = tmp.join("optimizer.safetensors");
    if opt.is_empty() {
        // safetensors needs at least a header; an empty state is an empty JSON header.
        let header = b"{}      ";
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&op, bytes).map_err(io(&op))?;
    } else {
        Tensor::write_safetensors(&opt, &op).ctx(format!("write {}", op.display()))?;
    }
    let rp = tmp.join("recipe.toml");
    std::fs::write(&rp, recipe_toml).map_err(io(&rp))?;
    let sp = tmp.join("state.json");
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| Error::Config(format!("checkpoint state: {e}")))?;
    std::fs::write(&sp, text).map_err(io(&sp))?;
    // The files are synced when the directory is put in place.
    manifest::write(tmp, &FILES)?;
    Ok(())
}
