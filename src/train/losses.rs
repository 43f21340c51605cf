//! Losses over named tensors.

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
