//! `[train]`: the loop's settings.

use crate::base::defaults::{count, uint, yes};
use crate::base::{Error, Result};
use serde::{Deserialize, Serialize};

/// Numeric precision of the forward pass.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// Autocast to bfloat16 for the forward pass; float32 master weights and optimizer state.
    Bf16,
}

/// Which c10d process group a data-parallel run uses (`[train] distributed_backend`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DistBackend {
    /// NCCL when every rank trains on a GPU, else Gloo.
    #[default]
    Auto,
    /// Gloo (CPU tensors; CUDA tensors go through the host).
    Gloo,
    /// NCCL (every rank on a GPU).
    Nccl,
}

fn auto() -> String {
    "auto".into()
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
    #[serde(default = "count::<1>")]
    pub grad_accum: usize,
    /// Write a metrics line every this many steps.
    #[serde(default = "uint::<10>")]
    pub log_every: u64,
    /// Evaluate every this many steps (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// `auto` (a GPU when there is one), `cpu` or `cuda`.
    #[serde(default = "auto")]
    pub device: String,
    #[serde(default)]
    pub precision: Precision,
    /// Stop on a NaN or infinite loss or gradient.
    #[serde(default = "yes")]
    pub nan_watchdog: bool,
    /// How many eval examples with a prompt are completed greedily for exact-match accuracy.
    #[serde(default = "count::<64>")]
    pub eval_generate: usize,
    /// CPU threads for libtorch (default: libtorch's choice). Determinism holds for a fixed
    /// machine and thread count.
    #[serde(default)]
    pub threads: Option<i32>,
    /// Use libtorch's deterministic algorithms and deterministic cuDNN where they exist (an op
    /// with no deterministic implementation prints a libtorch warning and runs anyway; set
    /// false to allow the faster non-deterministic kernels on a GPU).
    #[serde(default = "yes")]
    pub deterministic: bool,
    /// The process group of a data-parallel run (`pzt train --nproc N`, or torchrun's
    /// environment).
    #[serde(default)]
    pub distributed_backend: DistBackend,
    /// How long a data-parallel rank waits for the others (the rendezvous and every
    /// collective) before it gives up, in seconds.
    #[serde(default = "uint::<1800>")]
    pub distributed_timeout_s: u64,
    /// The weight of a mixture of experts' load-balancing loss (default: the model's
    /// `router_aux_loss_coef`; 0 turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_aux_loss_coef: Option<f64>,
    /// Tokens per chunk of a language model's loss: the token head (the final projection and
    /// what follows it) and the cross-entropy run this many tokens at a time and again in
    /// backward, so the `[batch, seq, vocab]` logits never exist whole (default: as many tokens
    /// as keep one chunk's logits at 2^25 values, 128 MiB in float32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_chunk_tokens: Option<usize>,
    /// Give memory freed during steps back to the system within a second, not only between
    /// steps: a lower peak, for a run that must fit in RAM, at some cost in speed (pages are
    /// faulted in again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release_memory: bool,
}

/// The logits values one chunk of the chunked loss holds by default (128 MiB in float32).
pub const LOSS_CHUNK_VALUES: usize = 1 << 25;

/// The largest `[train] loss_chunk_tokens`.
pub const MAX_LOSS_CHUNK: usize = 1 << 30;

/// The longest `[train] distributed_timeout_s` (a week).
pub const MAX_DIST_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// The most CPU threads `[train] threads` may ask for.
pub const MAX_THREADS: i32 = 1024;

/// The largest `[train] batch_size` (examples per micro-batch).
pub const MAX_BATCH: usize = 1 << 20;

pub(super) fn bad<T>(field: &str, message: String) -> Result<T> {
    Err(Error::ConfigField {
        field: field.into(),
        message,
    })
}

/// The most micro-batches one optimizer step may accumulate.
pub const MAX_GRAD_ACCUM: usize = 65_536;

impl TrainConfig {
    /// The tokens per chunk of the chunked loss for a vocabulary of `vocab` entries.
    pub fn loss_chunk(&self, vocab: usize) -> usize {
        self.loss_chunk_tokens
            .unwrap_or_else(|| (LOSS_CHUNK_VALUES / vocab.max(1)).max(1))
    }

    /// Checks values; `field` names the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return bad("steps", "[train]: steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad(
                "batch_size",
                "[train]: batch_size must be at least 1".into(),
            );
        }
        if !(1..=MAX_GRAD_ACCUM).contains(&self.grad_accum) {
            return bad(
                "grad_accum",
                format!(
                    "[train]: grad_accum must be 1 to {MAX_GRAD_ACCUM}, got {}",
                    self.grad_accum
                ),
            );
        }
        if self.log_every == 0 {
            return bad("log_every", "[train]: log_every must be at least 1".into());
        }
        if let Some(t) = self.threads {
            if !(1..=MAX_THREADS).contains(&t) {
                return bad(
                    "threads",
                    format!("[train]: threads must be 1 to {MAX_THREADS}, got {t}"),
                );
            }
        }
        // A batch the machine cannot hold is refused before anything is allocated.
        if self.batch_size > MAX_BATCH {
            return bad(
                "batch_size",
                format!(
                    "[train]: batch_size {} is more than pzt accepts ({MAX_BATCH})",
                    self.batch_size
                ),
            );
        }
        if !(1..=MAX_DIST_TIMEOUT_S).contains(&self.distributed_timeout_s) {
            return bad(
                "distributed_timeout_s",
                format!(
                    "[train]: distributed_timeout_s must be 1 to {MAX_DIST_TIMEOUT_S}, got {}",
                    self.distributed_timeout_s
                ),
            );
        }
        if let Some(c) = self
            .router_aux_loss_coef
            .filter(|c| !(c.is_finite() && *c >= 0.0))
        {
            return bad(
                "router_aux_loss_coef",
                format!("[train]: router_aux_loss_coef must be a finite number >= 0, got {c}"),
            );
        }
        if let Some(c) = self
            .loss_chunk_tokens
            .filter(|c| !(1..=MAX_LOSS_CHUNK).contains(c))
        {
            return bad(
                "loss_chunk_tokens",
                format!("[train]: loss_chunk_tokens must be 1 to {MAX_LOSS_CHUNK}, got {c}"),
            );
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
