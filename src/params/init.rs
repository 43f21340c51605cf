//! Deterministic initialization: a parameter's initial value depends only on the base seed, its
//! label and its initializer, never on the order in which parameters are built.
//!
//! The seed of a parameter is `mix(base_seed, fnv1a(label))`; the values are drawn on the CPU
//! from a fresh libtorch generator seeded with it (see [`crate::backend::seeded_random`]), then
//! moved to the target device and dtype, so they are the same on every device.

use crate::backend::{seeded_random, Distribution};
use crate::error::{Result, TorchContext};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// splitmix64-style mixing of two words.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a hash of a label.
pub fn hash_label(label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The seed of the parameter `label` under `base_seed`.
pub fn param_seed(base_seed: u64, label: &str) -> u64 {
    mix(base_seed, hash_label(label))
}

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
        label: &str,
        shape: &[i64],
        fan_in: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let seed = param_seed(base_seed, label);
        let what = format!("initialize `{label}`");
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
