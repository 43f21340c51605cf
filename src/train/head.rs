//! The model's output as a loss reads it, and the chunked loss over big vocabularies.
//!
//! A token-level loss (next-token cross-entropy, a preference objective's log-probabilities)
//! only needs one number per token: the log-probability of its target. When the model ends
//! in a token head ([`crate::models::token_head`]), [`Output::Hidden`] keeps the hidden states
//! before the head, and [`Output::token_logps`] runs the head, the log-softmax and the pick of
//! the target a chunk of tokens at a time, so that the `[batch, seq, vocab]` logits, their
//! softmax and their gradient never exist whole. Two ways keep the gradient:
//!
//! - A frozen head (LoRA and QLoRA without adapters on `lm_head`): each token's
//!   log-probability depends on its own hidden state alone, so its gradient with respect to
//!   that state (one vector per token, the hidden states' size) is computed with the chunk's
//!   logits in the forward, and backward multiplies it by the incoming gradient. Nothing is
//!   recomputed: the head costs what it costs unchunked (Liger's fused linear cross-entropy
//!   computes its gradient in the forward likewise).
//! - A head with trainable parameters: each chunk's logits are computed without grad and
//!   dropped; backward recomputes them chunk by chunk through the shim's checkpointed
//!   segments, as activation checkpointing does, for the parameters' gradients.
//!
//! Every other output is [`Output::Logits`], the plain path.

use super::task::rearranged;
use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::tree::{Node, SideInputs};
use tch::{Device, Kind, Tensor};

/// The hidden states before a token head, and how to finish them.
pub struct Hidden {
    pub hidden: NamedTensor,
    pub head: Node,
    pub side: SideInputs,
    /// Tokens per chunk.
    pub chunk: usize,
    /// The autocast the head runs under (the run's precision).
    pub autocast: Option<(Device, Kind)>,
}

/// What the model produced for a loss.
pub enum Output {
    /// The whole output (logits over the classes or the vocabulary).
    Logits(NamedTensor),
    /// The hidden states before the token head, finished chunk by chunk.
    Hidden(Hidden),
}

/// Per token: the log-probability of its target and, when asked, whether the target is the
/// most likely class (1.0 or 0.0), both `[batch, seq]` float32.
pub type TokenScores = (Tensor, Option<Tensor>);

impl Output {
    /// The whole logits (the head run on every token at once for [`Output::Hidden`]).
    pub fn logits(&self) -> Result<NamedTensor> {
        match self {
            Output::Logits(y) => Ok(y.clone()),
            Output::Hidden(h) => h.under_autocast(|| {
                h.head
                    .forward(h.hidden.clone(), &h.side)
                    .and_then(|v| v.into_tensor())
            }),
        }
    }

    /// The log-probability of each target (`targets`: `[batch, seq]` ids) under the output,
    /// whose axes are `batch`, `seq` and the vocabulary; with the argmax hits when `hits`.
    pub fn token_logps(
        &self,
        batch: &str,
        seq: &str,
        targets: &Tensor,
        hits: bool,
    ) -> Result<TokenScores> {
        match self {
            Output::Logits(y) => {
                let logits = rearranged(y, batch, Some(seq))?;
                scores(&logits, targets, hits)
            }
            Output::Hidden(h) => h.under_autocast(|| h.chunked(batch, seq, targets, hits)),
        }
    }
}

/// `logits` (`[..., vocab]`, float32) scored against `targets` (`[...]`).
fn scores(logits: &Tensor, targets: &Tensor, hits: bool) -> Result<TokenScores> {
    let idx = targets
        .f_to_kind(Kind::Int64)
        .and_then(|t| t.f_unsqueeze(-1))
        .ctx("cross-entropy")?;
    let logps = logits
        .f_log_softmax(-1, Kind::Float)
        .and_then(|l| l.f_gather(-1, &idx, false))
        .and_then(|g| g.f_squeeze_dim(-1))
        .ctx("cross-entropy")?;
    let hit = if hits {
        let pred = logits.f_argmax(-1, false).ctx("accuracy")?;
        Some(
            pred.f_eq_tensor(&idx.f_squeeze_dim(-1).ctx("accuracy")?)
                .and_then(|c| c.f_to_kind(Kind::Float))
                .ctx("accuracy")?,
        )
    } else {
        None
    };
    Ok((logps, hit))
}

impl Hidden {
    fn under_autocast<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some((device, kind)) = self.autocast else {
            return f();
        };
        crate::backend::set_autocast(device, Some(kind))?;
        let out = f();
        crate::backend::set_autocast(device, None)?;
        out
    }

    /// The hidden states as `[tokens, ...]` with the batch axis's name on the token axis.
    fn flat(&self, batch: &str, seq: &str) -> Result<NamedTensor> {
        let mut order = vec![batch.to_string(), seq.to_string()];
        order.extend(
            self.hidden
                .names()
                .iter()
                .filter(|n| *n != batch && *n != seq)
                .cloned(),
        );
        let h = self.hidden.with_name_order(&order)?;
        let mut size = h.tensor().size();
        let tokens = size[0] * size[1];
        size.drain(..2);
        size.insert(0, tokens);
        let t = h.tensor().f_reshape(size.as_slice()).ctx("chunked loss")?;
        let mut names = vec![batch.to_string()];
        names.extend(order.into_iter().skip(2));
        NamedTensor::from_parts(t, names)
    }

    fn chunked(&self, batch: &str, seq: &str, targets: &Tensor, hits: bool) -> Result<TokenScores> {
        let shape = targets.size();
        let flat = self.flat(batch, seq)?;
        let targets = targets.f_reshape([-1]).ctx("chunked loss")?;
        let n = targets.size()[0];
        let params: Vec<Tensor> = self
            .head
            .trainable_parameters()
            .iter()
            .map(|p| p.value())
            .collect();
        let (mut logps, mut hit) = (vec![], vec![]);
        let mut start = 0;
        while start < n {
            let len = (self.chunk as i64).min(n - start);
            let x = flat.tensor().f_narrow(0, start, len).ctx("chunked loss")?;
            let t = targets.f_narrow(0, start, len).ctx("chunked loss")?;
            let piece = ChunkHead {
                head: self.head.clone(),
                side: self.side.clone(),
                names: flat.names().to_vec(),
                batch: batch.to_string(),
            };
            if !params.is_empty() && crate::backend::grad_enabled() {
                let y = tch::no_grad(|| piece.scores(&x, &t, false))?.0;
                let recompute = move |x: Tensor| piece.scores(&x, &t, false).map(|s| s.0);
                logps.push(crate::backend::checkpointed(
                    &x,
                    &params,
                    &y,
                    Box::new(recompute),
                )?);
            } else if x.requires_grad() && crate::backend::grad_enabled() {
                logps.push(piece.with_gradient(&x, &t)?);
            } else {
                let (l, h) = piece.scores(&x, &t, hits)?;
                logps.push(l);
                hit.extend(h);
            }
            start += len;
        }
        let whole = |v: Vec<Tensor>| {
            Tensor::f_cat(&v, 0)
                .and_then(|t| t.f_reshape(shape.as_slice()))
                .ctx("chunked loss")
        };
        let hit = if hits && !hit.is_empty() {
            Some(whole(hit)?)
        } else {
            None
        };
        Ok((whole(logps)?, hit))
    }
}

/// One chunk's head: what the forward runs and backward runs again.
struct ChunkHead {
    head: Node,
    side: SideInputs,
    names: Vec<String>,
    batch: String,
}

impl ChunkHead {
    fn scores(&self, x: &Tensor, targets: &Tensor, hits: bool) -> Result<TokenScores> {
        let x = NamedTensor::from_parts(x.shallow_clone(), self.names.clone())?;
        let y = self
            .head
            .forward(x, &self.side)
            .and_then(|v| v.into_tensor())?;
        let logits = rearranged(&y, &self.batch, None)?;
        scores(&logits, targets, hits)
    }

    /// The log-probabilities of a frozen head on `x` (which requires grad), attached to the
    /// graph with their gradient with respect to `x` computed now: `x`'s gradient in backward
    /// is the incoming gradient of each token times its row of that gradient.
    fn with_gradient(&self, x: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let xg = x
            .f_detach()
            .and_then(|mut d| d.f_requires_grad_(true))
            .ctx("chunked loss")?;
        let logps = self.scores(&xg, targets, false)?.0;
        let total = logps.f_sum(Kind::Float).ctx("chunked loss")?;
        let grad = Tensor::f_run_backward(&[&total], &[&xg], false, false)
            .ctx("chunked loss: the head's gradient")?
            .pop()
            .ok_or_else(|| Error::Shim("chunked loss: no gradient returned".into()))?;
        // logps + (Σ x·g − that, detached): the value is logps exactly (a − a is 0), the
        // gradient with respect to x is g.
        let dims: Vec<i64> = (1..x.dim() as i64).collect();
        let linear = x
            .f_mul(&grad)
            .and_then(|p| p.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float))
            .ctx("chunked loss")?;
        let zero = linear
            .f_sub(&linear.f_detach().ctx("chunked loss")?)
            .ctx("chunked loss")?;
        logps
            .f_detach()
            .and_then(|l| l.f_add(&zero))
            .ctx("chunked loss")
    }
}
