//! What every rank of a data-parallel run must agree on before the first step: the step and
//! checkpoint it resumes from, the settings that decide the collectives and the updates, the
//! data (a sample of its examples) and the model (its structure and starting values), and the
//! device type. Each fact is a float64 (hashes in 32-bit halves) reduced by min and max over the
//! ranks: a fact whose min and max differ is named in the error every rank reports.

use super::session::Session;
use super::world::World;
use crate::backend::dist::ReduceOp;
use crate::base::{Error, Result};
use crate::params::Parameter;
use crate::run::checkpoint::{self, BaseRecord};

/// What every rank of a data-parallel run must agree on before the first step, as
/// float64s (hashes in 32-bit halves): the step it resumed from and that checkpoint's
/// `state.json`, what decides the collectives and the updates (the `[train]`, `[optim]`
/// and `[checkpoint]` settings but threads, the seed, the training set's size, the
/// trainable parameters' labels and shapes), and whether it trains on a GPU.
pub(super) fn start_facts(
    session: &Session,
    params: &[Parameter],
    step: u64,
    base: Option<&BaseRecord>,
) -> Result<Vec<(&'static str, f64)>> {
    let halves = |h: u64| ((h >> 32) as f64, (h & 0xffff_ffff) as f64);
    let spec = &session.spec;
    let state = checkpoint::latest(&spec.run.out_dir)
        .and_then(|(_, d)| std::fs::read(d.join("state.json")).ok())
        .map_or(0, |b| crate::base::seed::fnv1a(&b));
    let mut train = spec.train.clone();
    train.threads = None;
    let shapes: Vec<(String, Vec<i64>)> = params
        .iter()
        .map(|p| (p.label().to_string(), p.shape()))
        .collect();
    // The data (a sample of its examples) and the model (its whole structure: kinds,
    // configs, labels and shapes, and the values it starts from) must be the same too.
    let structure = session
        .tree
        .to_toml()
        .ok()
        .and_then(|t| toml::to_string(&t).ok())
        .unwrap_or_default();
    let values = crate::params::fingerprint::fingerprint(params)?;
    let plan = serde_json::to_string(&(
        &train,
        &spec.optim,
        &spec.checkpoint,
        spec.run.seed,
        session.data.train.len(),
        shapes,
        session.data.fingerprint()?,
        crate::base::seed::fnv1a(structure.as_bytes()),
        (values, base.map(|b| b.fingerprint.clone())),
    ))
    .map_err(|e| Error::Run(format!("the run's settings: {e}")))?;
    let (plan, state) = (
        halves(crate::base::seed::fnv1a(plan.as_bytes())),
        halves(state),
    );
    let gpu = matches!(session.device, tch::Device::Cuda(_));
    Ok(vec![
        ("the step they resume from", step as f64),
        ("the checkpoint they resume from", state.0),
        ("the checkpoint they resume from", state.1),
        (
            "their [train], [optim] or [checkpoint] settings, data or model",
            plan.0,
        ),
        (
            "their [train], [optim] or [checkpoint] settings, data or model",
            plan.1,
        ),
        (
            "their device (some on a GPU, some on the CPU)",
            f64::from(u8::from(gpu)),
        ),
    ])
}

/// Every rank must start from the same place with the same plan.
pub(super) fn agree(world: &World, facts: &[(&'static str, f64)]) -> Result<()> {
    let mine: Vec<f64> = facts.iter().map(|f| f.1).collect();
    let lo = world.reduce_values(&mine, ReduceOp::Min)?;
    let hi = world.reduce_values(&mine, ReduceOp::Max)?;
    match facts.iter().zip(lo.iter().zip(&hi)).find(|(_, (l, h))| l != h) {
        None => Ok(()),
        Some(((what, _), (l, h))) => Err(Error::Config(format!(
            "rank {}: the ranks differ in {what}{}; every rank must run the same recipe on one shared out_dir",
            world.rank,
            if what.starts_with("the step") {
                format!(" ({l} to {h})")
            } else {
                String::new()
            }
        ))),
    }
}
