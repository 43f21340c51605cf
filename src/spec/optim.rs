//! `[optim]`: the optimizer, its hyper-parameters and the learning-rate schedule.

use super::train::bad;
use crate::base::Result;
use serde::{Deserialize, Serialize};

/// Which optimizer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    #[default]
    Adamw,
    Sgd,
}

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after warmup.
    #[default]
    Constant,
    /// Linear decay to `min_lr_ratio * lr` at the last step.
    Linear,
    /// Cosine decay to `min_lr_ratio * lr` at the last step.
    Cosine,
}

fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps() -> f64 {
    1e-8
}

/// `[optim]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    #[serde(default)]
    pub kind: OptimKind,
    pub lr: f64,
    /// AdamW's (beta1, beta2).
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    #[serde(default = "eps")]
    pub eps: f64,
    /// Decoupled weight decay (AdamW) or L2 (SGD), applied to parameters with at least two
    /// dimensions (not to norm scales and biases) unless `decay_norms_and_biases`.
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub decay_norms_and_biases: bool,
    /// SGD momentum.
    #[serde(default)]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    #[serde(default)]
    pub schedule: Schedule,
    /// Linear warmup from 0 over this many steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The learning rate at the end of a linear or cosine decay, as a fraction of `lr`.
    #[serde(default)]
    pub min_lr_ratio: f64,
}

impl OptimConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(
                "lr",
                format!("[optim]: lr must be positive, got {}", self.lr),
            );
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return bad(
                "betas",
                format!("[optim]: betas must be in [0, 1), got {:?}", self.betas),
            );
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(
                "eps",
                format!("[optim]: eps must be a positive number, got {}", self.eps),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                "weight_decay",
                format!(
                    "[optim]: weight_decay must be a finite number >= 0, got {}",
                    self.weight_decay
                ),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "[optim]: momentum must be in [0, 1)".into());
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "[optim]: nesterov needs momentum > 0".into());
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c > 0.0 && c.is_finite()) {
                return bad(
                    "clip_grad_norm",
                    format!("[optim]: clip_grad_norm must be a positive finite number, got {c} (leave it out to not clip)"),
                );
            }
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(
                "min_lr_ratio",
                "[optim]: min_lr_ratio must be in [0, 1]".into(),
            );
        }
        Ok(())
    }

    /// Bytes of optimizer state per trainable value: two float32 moments for AdamW, a float32
    /// momentum buffer for SGD with momentum, none for plain SGD (the optimizers keep their
    /// state in float32 whatever the parameter dtype).
    pub fn state_bytes_per_value(&self) -> i64 {
        match self.kind {
            OptimKind::Adamw => 8,
            OptimKind::Sgd if self.momentum > 0.0 => 4,
            OptimKind::Sgd => 0,
        }
    }

    /// What the optimizer keeps, for the plan's memory line: `AdamW`, `SGD with momentum`,
    /// `SGD`.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            OptimKind::Adamw => "AdamW",
            OptimKind::Sgd if self.momentum > 0.0 => "SGD with momentum",
            OptimKind::Sgd => "SGD",
        }
    }

    /// The learning rate at optimizer step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        let floor = self.lr * self.min_lr_ratio;
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => floor + (self.lr - floor) * (1.0 - t),
            Schedule::Cosine => {
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: Schedule) -> OptimConfig {
        OptimConfig {
            kind: OptimKind::Adamw,
            lr: 1.0,
            betas: betas(),
            eps: eps(),
            weight_decay: 0.0,
            decay_norms_and_biases: false,
            momentum: 0.0,
            nesterov: false,
            clip_grad_norm: None,
            schedule,
            warmup_steps: 2,
            min_lr_ratio: 0.1,
        }
    }

    #[test]
    fn schedules() {
        let c = cfg(Schedule::Cosine);
        assert_eq!(c.lr_at(0, 12), 0.5);
        assert_eq!(c.lr_at(1, 12), 1.0);
        assert_eq!(c.lr_at(2, 12), 1.0);
        assert!((c.lr_at(12, 12) - 0.1).abs() < 1e-12);
        let l = cfg(Schedule::Linear);
        assert!((l.lr_at(7, 12) - 0.55).abs() < 1e-12);
        assert_eq!(cfg(Schedule::Constant).lr_at(11, 12), 1.0);
    }

    #[test]
    fn state_sizes() {
        let mut c = cfg(Schedule::Constant);
        assert_eq!((c.state_bytes_per_value(), c.describe()), (8, "AdamW"));
        c.kind = OptimKind::Sgd;
        assert_eq!((c.state_bytes_per_value(), c.describe()), (0, "SGD"));
        c.momentum = 0.9;
        assert_eq!(c.state_bytes_per_value(), 4);
    }
}
