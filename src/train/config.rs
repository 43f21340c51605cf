//! The training sections of a recipe: `[train]`, `[optim]`, `[checkpoint]`.

use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};

fn d_one() -> usize {
    1
}
fn d_log_every() -> u64 {
    10
}
fn d_auto() -> String {
    "auto".into()
}
fn d_fp32() -> Precision {
    Precision::Fp32
}
fn d_true() -> bool {
    true
}
fn d_generate() -> usize {
    64
}

/// Numeric precision of the forward pass.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in float32.
    Fp32,
    /// Autocast to bfloat16 for the forward pass; float32 master weights and optimizer state.
    Bf16,
}

/// `[train]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    /// Write a metrics line every this many steps.
    #[serde(default = "d_log_every")]
    pub log_every: u64,
    /// Evaluate every this many steps (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// `auto` (a GPU when there is one), `cpu` or `cuda`.
    #[serde(default = "d_auto")]
    pub device: String,
    #[serde(default = "d_fp32")]
    pub precision: Precision,
    /// Stop on a NaN or infinite loss or gradient.
    #[serde(default = "d_true")]
    pub nan_watchdog: bool,
    /// How many eval examples with a prompt are completed greedily for exact-match accuracy.
    #[serde(default = "d_generate")]
    pub eval_generate: usize,
    /// CPU threads for libtorch (default: libtorch's choice). Determinism holds for a fixed
    /// machine and thread count.
    #[serde(default)]
    pub threads: Option<i32>,
    /// Use libtorch's deterministic algorithms and deterministic cuDNN where they exist (an op
    /// with no deterministic implementation prints a libtorch warning and runs anyway; set
    /// false to allow the faster non-deterministic kernels on a GPU).
    #[serde(default = "d_true")]
    pub deterministic: bool,
}

impl TrainConfig {
    /// Checks values; `field` names the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::ConfigField {
                field: field.into(),
                message,
            })
        };
        if self.steps == 0 {
            return bad("steps", "[train]: steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad(
                "batch_size",
                "[train]: batch_size must be at least 1".into(),
            );
        }
        if self.grad_accum == 0 {
            return bad(
                "grad_accum",
                "[train]: grad_accum must be at least 1".into(),
            );
        }
        if self.log_every == 0 {
            return bad("log_every", "[train]: log_every must be at least 1".into());
        }
        if !matches!(self.device.as_str(), "auto" | "cpu" | "cuda") {
            return bad(
                "device",
                format!(
                    "[train]: device must be auto, cpu or cuda, got `{}`",
                    self.device
                ),
            );
        }
        Ok(())
    }
}

/// Which optimizer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    Adamw,
    Sgd,
}

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after warmup.
    Constant,
    /// Linear decay to `min_lr_ratio * lr` at the last step.
    Linear,
    /// Cosine decay to `min_lr_ratio * lr` at the last step.
    Cosine,
}

fn d_adamw() -> OptimKind {
    OptimKind::Adamw
}
fn d_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn d_eps() -> f64 {
    1e-8
}
fn d_constant() -> Schedule {
    Schedule::Constant
}

/// `[optim]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    #[serde(default = "d_adamw")]
    pub kind: OptimKind,
    pub lr: f64,
    /// AdamW's (beta1, beta2).
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    #[serde(default = "d_eps")]
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
    #[serde(default = "d_constant")]
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
        let bad = |field: &str, message: String| {
            Err(Error::ConfigField {
                field: field.into(),
                message,
            })
        };
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
        if self.weight_decay < 0.0 {
            return bad(
                "weight_decay",
                "[optim]: weight_decay must be non-negative".into(),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "[optim]: momentum must be in [0, 1)".into());
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "[optim]: nesterov needs momentum > 0".into());
        }
        if let Some(c) = self.clip_grad_norm {
            if c <= 0.0 {
                return bad(
                    "clip_grad_norm",
                    "[optim]: clip_grad_norm must be positive".into(),
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

fn d_keep_last() -> usize {
    3
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (always at the end).
    #[serde(default)]
    pub every_steps: Option<u64>,
    /// Keep the newest this many checkpoints.
    #[serde(default = "d_keep_last")]
    pub keep_last: usize,
    /// Also keep the best checkpoint by this eval metric (`eval.loss`, `eval.accuracy`, ...).
    #[serde(default)]
    pub keep_best: Option<String>,
    /// `min` or `max` (default: `max` for accuracies, `min` otherwise).
    #[serde(default)]
    pub best_mode: Option<String>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: None,
            keep_last: d_keep_last(),
            keep_best: None,
            best_mode: None,
        }
    }
}

/// The eval metrics a run can produce (for `keep_best`).
pub const EVAL_METRICS: [&str; 5] = [
    "eval.loss",
    "eval.perplexity",
    "eval.accuracy",
    "eval.token_accuracy",
    "eval.exact_match",
];

impl CheckpointConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::ConfigField {
                field: field.into(),
                message,
            })
        };
        if self.every_steps == Some(0) {
            return bad(
                "every_steps",
                "[checkpoint]: every_steps must be at least 1".into(),
            );
        }
        if self.keep_last == 0 {
            return bad(
                "keep_last",
                "[checkpoint]: keep_last must be at least 1".into(),
            );
        }
        if let Some(m) = &self.keep_best {
            if !EVAL_METRICS.contains(&m.as_str()) {
                return bad(
                    "keep_best",
                    format!(
                        "[checkpoint]: keep_best must be one of {}, got `{m}`",
                        EVAL_METRICS.join(", ")
                    ),
                );
            }
        }
        if let Some(m) = &self.best_mode {
            if m != "min" && m != "max" {
                return bad(
                    "best_mode",
                    format!("[checkpoint]: best_mode must be min or max, got `{m}`"),
                );
            }
        }
        Ok(())
    }

    /// Whether larger values of the best metric are better.
    pub fn maximize(&self) -> bool {
        match self.best_mode.as_deref() {
            Some("max") => true,
            Some(_) => false,
            None => self
                .keep_best
                .as_deref()
                .map(|m| m.contains("accuracy") || m.contains("exact"))
                .unwrap_or(false),
        }
    }
}
