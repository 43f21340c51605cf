//! Deterministic initialization: a parameter's initial value depends only on the base seed, its
//! init name and its initializer, never on the order in which parameters are built. The init
//! name is the parameter's label unless its builder names it otherwise
//! ([`crate::tree::Scope::pp_as`]).
//!
//! The seed of a parameter is `mix(base_seed, fnv1a(init name))` ([`param_seed`]); the values
//! are drawn on the CPU
//! from a fresh libtorch generator seeded with it (see [`crate::backend::seeded_random`]), then
//! moved to the target device and dtype, so they are the same on every device.

use crate::backend::{seeded_random, Distribution};
use crate::base::seed::param_seed;
use crate::base::{Result, TorchContext};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How a parameter is initialized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// A constant.
    Constant { value: f64 },
    /// Normal with the given standard deviation.
    Normal { std: f64 },
    /// Uniform on `[-limit, limit]`.
    Uniform { limit: f64 },
    /// Normal with variance `scale / fan_in` (fan_in: product of the input axis sizes), as
    /// Penzai's default for Linear.
    FanIn { scale: f64 },
}

impl Initializer {
    /// Makes the initial value.
    pub fn make(
        &self,
        base_seed: u64,
        init_name: &str,
        shape: &[i64],
        fan_in: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let seed = param_seed(base_seed, init_name);
        let what = format!("initialize `{init_name}`");
        let t = match *self {
            Initializer::Zeros => Tensor::f_zeros(shape, (Kind::Float, Device::Cpu)).ctx(&what)?,
            Initializer::Ones => Tensor::f_ones(shape, (Kind::Float, Device::Cpu)).ctx(&what)?,
            Initializer::Constant { value } => {
                Tensor::f_full(shape, value, (Kind::Float, Device::Cpu)).ctx(&what)?
            }
            Initializer::Normal { std } => {
                seeded_random(seed, Distribution::Normal, shape, Kind::Float, Device::Cpu)?
                    .f_mul_scalar(std)
                    .ctx(&what)?
            }
            Initializer::Uniform { limit } => {
                seeded_random(seed, Distribution::Uniform, shape, Kind::Float, Device::Cpu)?
                    .f_mul_scalar(2.0 * limit)
                    .and_then(|t| t.f_sub_scalar(limit))
                    .ctx(&what)?
            }
            Initializer::FanIn { scale } => {
                let std = (scale / fan_in.max(1) as f64).sqrt();
                seeded_random(seed, Distribution::Normal, shape, Kind::Float, Device::Cpu)?
                    .f_mul_scalar(std)
                    .ctx(&what)?
            }
        };
        t.f_to_kind(kind)
            .and_then(|t| t.f_to_device(device))
            .ctx(&what)
    }
}
