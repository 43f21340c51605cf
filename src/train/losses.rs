//! Losses: over named tensors (`mse`, `cross_entropy`), and the masked, summed forms the
//! training tasks use.

use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use tch::Tensor;

/// Mean squared error over all elements (the two operands must have the same named shape).
pub fn mse(pred: &NamedTensor, target: &NamedTensor) -> Result<Tensor> {
    let d = pred.sub(target)?;
    d.tensor()
        .f_square()
        .and_then(|s| s.f_mean(None::<tch::Kind>))
        .ctx("mse")
}

/// Cross-entropy of `logits` (with a `classes` axis) against integer `labels` (the other
/// axes), averaged over all labels.
pub fn cross_entropy(logits: &NamedTensor, labels: &NamedTensor, classes: &str) -> Result<Tensor> {
    let logp = logits.log_softmax(&[classes])?;
    let mut order: Vec<String> = labels.names().to_vec();
    if order.len() + 1 != logp.names().len() || order.iter().any(|n| !logp.has(n)) {
        return Err(Error::Axis(format!(
            "cross_entropy: labels {} do not match logits {} (minus `{classes}`)",
            labels.describe(),
            logits.describe()
        )));
    }
    order.push(classes.to_string());
    let lp = logp.with_name_order(&order)?;
    let idx = labels
        .tensor()
        .f_to_kind(tch::Kind::Int64)
        .and_then(|t| t.f_unsqueeze(-1))
        .ctx("cross_entropy")?;
    let picked = lp.tensor().f_gather(-1, &idx, false).ctx("cross_entropy")?;
    picked
        .f_neg()
        .and_then(|t| t.f_mean(None::<tch::Kind>))
        .ctx("cross_entropy")
}

/// Sums over a batch, for averaging over many: the summed loss, the number of targets, and the
/// number predicted right (classification and language models).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    pub loss: f64,
    pub count: f64,
    pub correct: f64,
    /// A preference objective's sums.
    pub pref: super::preference::PrefSums,
}

impl std::ops::AddAssign for Sums {
    fn add_assign(&mut self, o: Sums) {
        self.loss += o.loss;
        self.count += o.count;
        self.correct += o.correct;
        self.pref += o.pref;
    }
}

/// The number of targets under a 0/1 `mask` (at least 1, so that means stay finite).
fn mask_count(mask: &Tensor) -> Result<f64> {
    Ok(mask
        .f_sum(tch::Kind::Float)
        .and_then(|s| s.f_double_value(&[]))
        .ctx("loss")?
        .max(1.0))
}

/// The summed negative log-likelihood where `mask` is 1, from each target's log-probability
/// (a 0-dim float tensor, on the device).
fn masked_nll_sum(logps: &Tensor, mask: &Tensor) -> Result<Tensor> {
    logps
        .f_neg()
        .and_then(|g| g.f_mul(mask))
        .and_then(|g| g.f_sum(tch::Kind::Float))
        .ctx("cross-entropy")
}

/// The log-probability of each target (`targets`: `[...]`) under `logits` (`[..., classes]`).
fn target_logps(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let idx = targets
        .f_to_kind(tch::Kind::Int64)
        .and_then(|t| t.f_unsqueeze(-1))
        .ctx("cross-entropy")?;
    logits
        .f_log_softmax(-1, tch::Kind::Float)
        .and_then(|l| l.f_gather(-1, &idx, false))
        .and_then(|g| g.f_squeeze_dim(-1))
        .ctx("cross-entropy")
}

/// Cross-entropy from each target's log-probability `logps` where `mask` is 1, averaged over
/// the masked targets (at least 1), without reading anything back from the device (what a
/// training step back-propagates).
pub fn masked_nll_mean(logps: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let total = masked_nll_sum(logps, mask)?;
    let count = mask
        .f_sum(tch::Kind::Float)
        .and_then(|c| c.f_clamp_min(1.0))
        .ctx("cross-entropy")?;
    total.f_div(&count).ctx("cross-entropy")
}

/// Cross-entropy from each target's log-probability `logps` where `mask` is 1, averaged over
/// the masked targets; with the sums and the argmax hits (`hits`: 1.0 where the target was the
/// most likely class).
pub fn masked_nll(logps: &Tensor, hits: &Tensor, mask: &Tensor) -> Result<(Tensor, Sums)> {
    let count = mask_count(mask)?;
    let total = masked_nll_sum(logps, mask)?;
    let mean = total.f_div_scalar(count).ctx("cross-entropy")?;
    let correct = hits
        .f_mul(mask)
        .and_then(|c| c.f_sum(tch::Kind::Float))
        .and_then(|c| c.f_double_value(&[]))
        .ctx("accuracy")?;
    let loss = total.f_double_value(&[]).ctx("cross-entropy")?;
    Ok((
        mean,
        Sums {
            loss,
            count,
            correct,
            ..Sums::default()
        },
    ))
}

/// Cross-entropy of `logits` (`[..., classes]`, float) against integer `targets` (`[...]`)
/// where `mask` is 1, averaged over the masked targets; with the sums and the argmax hits.
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, Sums)> {
    let logps = target_logps(logits, targets)?;
    let hits = logits
        .f_argmax(-1, false)
        .and_then(|p| p.f_eq_tensor(&targets.f_to_kind(tch::Kind::Int64)?))
        .and_then(|c| c.f_to_kind(tch::Kind::Float))
        .ctx("accuracy")?;
    masked_nll(&logps, &hits, mask)
}

/// Squared error of `pred` (one value per example) against `targets`, averaged over the
/// examples counted by `mask`; with the sums.
pub fn sum_squared_error(pred: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<(Tensor, Sums)> {
    let count = mask_count(mask)?;
    let pred = pred
        .f_reshape([-1])
        .ctx("mse: the regression output must have one value per example")?;
    let se = pred.f_sub(targets).and_then(|d| d.f_square()).ctx("mse")?;
    let total = se.f_sum(tch::Kind::Float).ctx("mse")?;
    let mean = total.f_div_scalar(count).ctx("mse")?;
    let loss = total.f_double_value(&[]).ctx("mse")?;
    Ok((
        mean,
        Sums {
            loss,
            count,
            ..Sums::default()
        },
    ))
}
