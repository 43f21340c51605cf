//! Checkpoint directories on disk (also `pzt::train::checkpoint`): `<out_dir>/checkpoints/step-<N>/` with `model.safetensors` (parameters by their
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
pub mod manifest;

use crate::base::{Error, Result, TorchContext};
use crate::params::fingerprint::fingerprint;
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

/// The frozen parameters a checkpoint was trained against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseRecord {
    /// Where they came from (the HF model directory), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How many distinct frozen parameters there are.
    pub parameters: usize,
    /// [`crate::params::fingerprint::fingerprint`] of their values.
    pub fingerprint: String,
    /// A hash of the base model's structure and layer configs (rope_theta, eps, sizes, ...),
    /// with adapters and activation checkpointing taken out: what, with the values, determines
    /// the function. Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
}

/// The hash of what a base model computes, beyond its values: the structure and configs of
/// `tree` with each LoRA/DoRA adapter replaced by the Linear it adapts and activation
/// checkpointing removed.
pub fn base_structure(tree: &Node) -> Result<String> {
    let plain = crate::layers::toolshed::without_checkpointing(tree)?;
    let plain = crate::tree::select(&plain)
        .at_instances_of("LowRankAdapter")
        .apply(|_, n| n.child("pretrained")?.child("0").cloned())?;
    let text = toml::to_string(&plain.to_toml()?)
        .map_err(|e| Error::Config(format!("the model's structure: {e}")))?;
    Ok(format!(
        "{:016x}",
        crate::base::seed::fnv1a(text.as_bytes())
    ))
}

impl BaseRecord {
    /// The record of the frozen parameters of `tree` (None when everything trains).
    pub fn of(tree: &Node, model: Option<&Path>) -> Result<Option<BaseRecord>> {
        let frozen: Vec<Parameter> = tree
            .parameters()
            .into_iter()
            .filter(|p| !p.trainable())
            .collect();
        if frozen.is_empty() {
            return Ok(None);
        }
        Ok(Some(BaseRecord {
            model: model.map(|p| p.display().to_string()),
            parameters: frozen.len(),
            fingerprint: fingerprint(&frozen)?,
            structure: Some(base_structure(tree)?),
        }))
    }
}

/// Loads checkpoint `dir` into the trainable parameters of `tree` and checks its base.
pub fn load_model(dir: &Path, tree: &Node) -> Result<TrainState> {
    let (state, _) = load(dir, &tree.trainable_parameters())?;
    verify_base(dir, &state, tree)?;
    Ok(state)
}

/// Checks that the frozen parameters of `tree` are those checkpoint `dir` was trained against.
pub fn verify_base(dir: &Path, state: &TrainState, tree: &Node) -> Result<()> {
    let Some(want) = &state.base else {
        return Ok(());
    };
    let have = BaseRecord::of(tree, None)?;
    let now = have.as_ref().map_or(0, |h| h.parameters);
    if now != want.parameters {
        return Err(Error::Config(format!(
            "{}: this checkpoint was trained with {} frozen parameter(s), and the recipe now freezes {now}: its [strategy] (kind, trainable, freeze, LoRA targets) changed; use the checkpoint's own recipe ({}) or train into another out_dir",
            dir.join("state.json").display(),
            want.parameters,
            dir.join("recipe.toml").display()
        )));
    }
    if let (Some(w), Some(h)) = (
        &want.structure,
        have.as_ref().and_then(|h| h.structure.as_ref()),
    ) {
        if w != h {
            let what = want
                .model
                .as_ref()
                .map(|m| format!("the base model {m}"))
                .unwrap_or_else(|| "the model".to_string());
            return Err(Error::Config(format!(
                "{}: the configuration of {what} changed since this checkpoint was trained (its structure or a layer setting such as rope_theta, an epsilon or a size in config.json or the recipe; structure {w} in state.json, {h} now); the checkpoint holds only the trained parameters and needs the same base",
                dir.join("state.json").display(),
            )));
        }
    }
    let same = have
        .as_ref()
        .is_some_and(|h| h.fingerprint == want.fingerprint && h.parameters == want.parameters);
    if same {
        return Ok(());
    }
    let what = want
        .model
        .as_ref()
        .map(|m| format!("the base model {m}"))
        .unwrap_or_else(|| "the frozen parameters".to_string());
    Err(Error::Config(format!(
        "{}: {what} changed since this checkpoint was trained (fingerprint {} in state.json, {} now); the checkpoint holds only the trained parameters and needs the same base",
        dir.join("state.json").display(),
        want.fingerprint,
        have.map(|h| h.fingerprint).unwrap_or_else(|| "none".into())
    )))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn fsync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
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
    let root = dir_of(out_dir);
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let final_dir = root.join(format!("step-{}", state.step));
    let tmp = root.join(format!(".tmp-step-{}-{}", state.step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = write_files(&tmp, state, params, optimizer_state, recipe_toml) {
        // A failed write (a full disk) leaves no partial directory behind.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        let old = root.join(format!(".old-step-{}-{}", state.step, std::process::id()));
        std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
        std::fs::rename(&tmp, &final_dir).map_err(io(&tmp))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(io(&tmp))?;
    }
    fsync(&root)?;
    Ok(final_dir)
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

/// Reads a checkpoint's state, and copies its parameters into `params` (by label; every
/// parameter must be present with its shape and finite values). Returns the state and the
/// optimizer tensors. Pass the trainable parameters: a checkpoint holds only those.
pub fn load(dir: &Path, params: &[Parameter]) -> Result<(TrainState, Vec<(String, Tensor)>)> {
    let (state, _) = read_state(dir)?;
    let mp = dir.join("model.safetensors");
    let tensors = Tensor::read_safetensors(&mp).map_err(|e| {
        corrupt(
            dir,
            format!(
                "model.safetensors: {}",
                crate::base::error::clean_torch_message(&e.to_string())
            ),
        )
    })?;
    let mut by: std::collections::BTreeMap<String, Tensor> = tensors.into_iter().collect();
    // A checkpoint of another model or strategy holds other parameters: say so, not that it is
    // damaged.
    let missing: Vec<&str> = params
        .iter()
        .map(|p| p.label())
        .filter(|l| !by.contains_key(*l))
        .collect();
    if let Some(first) = missing.first() {
        let more = match missing.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        let held: Vec<&str> = by.keys().take(3).map(String::as_str).collect();
        return Err(Error::Config(format!(
            "checkpoint {} was trained with another model or [strategy] than this recipe builds: it holds no `{first}`{more} (it holds `{}`{}); use its own recipe ({}) or train into another out_dir",
            dir.display(),
            held.join("`, `"),
            if by.len() > 3 { ", ..." } else { "" },
            dir.join("recipe.toml").display()
        )));
    }
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
    let man = manifest::write(tmp, &FILES)?;
    for f in [&mp, &op, &rp, &sp, &man] {
        fsync(f)?;
    }
    fsync(tmp)
}

/// Deletes checkpoints beyond the newest `keep_last`, sparing `keep_step` and every checkpoint
/// another run still starts from (see [`pin`]).
pub fn prune(out_dir: &Path, keep_last: usize, keep_step: Option<u64>) -> Result<()> {
    let all = list(out_dir);
    let n = all.len();
    let pinned = pinned_steps(out_dir);
    for (i, (step, path)) in all.into_iter().enumerate() {
        if i + keep_last < n && Some(step) != keep_step && !pinned.contains(&step) {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Where the pins of a run's checkpoints are kept: `checkpoints/.pins/`.
fn pins_dir(out_dir: &Path) -> PathBuf {
    dir_of(out_dir).join(".pins")
}

/// Records that the run directory `by_run` is built from the checkpoint `checkpoint`
/// (`[model] checkpoint = ...`), so that the pruning of the checkpoint's own run (`keep_last`)
/// spares it for as long as `by_run` exists: a pin is the file
/// `<run>/checkpoints/.pins/step-<N>.<hash>` holding the dependent run's path. Nothing happens
/// for a directory that is not a step of a run.
pub fn pin(checkpoint: &Path, by_run: &Path) -> Result<()> {
    let checkpoint = checkpoint
        .canonicalize()
        .unwrap_or_else(|_| checkpoint.to_path_buf());
    let by = by_run
        .canonicalize()
        .unwrap_or_else(|_| by_run.to_path_buf());
    let (Some(name), Some(run)) = (
        checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        checkpoint.parent().and_then(Path::parent),
    ) else {
        return Ok(());
    };
    if !name.starts_with("step-") || dir_of(run) != checkpoint.parent().unwrap_or(run) {
        return Ok(());
    }
    let by_text = by.display().to_string();
    let dir = pins_dir(run);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let f = dir.join(format!(
        "{name}.{:016x}",
        crate::base::seed::fnv1a(by_text.as_bytes())
    ));
    if !f.is_file() {
        crate::base::outputs::write(&f, by_text.as_bytes())?;
    }
    Ok(())
}

/// The steps of `out_dir` that a run that still exists is built from.
pub fn pinned_steps(out_dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(pins_dir(out_dir)) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let by = crate::base::files::read_small_file(&e.path()).ok()?;
            // A dependent run that was deleted no longer holds the checkpoint.
            Path::new(by.trim()).exists().then_some(step)
        })
        .collect()
}
