//! The preference objectives ([`crate::spec::Objective`]) as a [`Task`]: DPO, IPO, ORPO and
//! SimPO over preference pairs, KTO over unpaired rows, as TRL defines them.
//!
//! A batch of B pairs holds 2B sequences, the chosen completions (each after its prompt) then
//! the rejected ones, as TRL's collator lays them out. A KTO batch of B rows holds the B
//! completions, then B mismatched ones: row i's prompt followed by row i-1's completion (the
//! completions cycled by one within the batch, as TRL's collator does), whose log-ratios give
//! the reference point. Each sequence is cut to the longest of the batch. ℓ(y), the sum of the
//! log-probabilities of a completion's tokens, is read from the model output; the reference's
//! (DPO, IPO, KTO) is computed by the trainer before the loss and travels in the batch.

use super::head::Output;
use super::losses::Sums;
use super::task::{Batch, Greedy, PrefBatch, Task};
use crate::base::{Error, Result, TorchContext};
use crate::data::Example;
use crate::named::NamedTensor;
use crate::spec::{Objective, ObjectiveKind};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

/// What a preference batch adds up, for averaging over steps or the eval split: pairs (or
/// rows), and the sums of the loss and of each metric over them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrefSums {
    /// Pairs (KTO: rows).
    pub pairs: f64,
    pub loss: f64,
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    /// Chosen (KTO: desirable) and rejected (undesirable) rows, for KTO's means.
    pub chosen: f64,
    pub rejected: f64,
    pub accuracies: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
    /// KTO: the reference point (summed per batch); ORPO: the chosen NLL, the log odds ratio
    /// and log odds (summed per pair).
    pub kl: f64,
    pub batches: f64,
    pub nll: f64,
    pub log_odds_ratio: f64,
    pub log_odds: f64,
}

impl std::ops::AddAssign for PrefSums {
    fn add_assign(&mut self, o: PrefSums) {
        let v = o.values();
        let mut mine = self.values();
        for (a, b) in mine.iter_mut().zip(v) {
            *a += b;
        }
        *self = PrefSums::from_values(&mine);
    }
}

impl PrefSums {
    /// The sums as a list (to reduce over ranks).
    pub fn values(&self) -> [f64; 14] {
        [
            self.pairs,
            self.loss,
            self.rewards_chosen,
            self.rewards_rejected,
            self.chosen,
            self.rejected,
            self.accuracies,
            self.logps_chosen,
            self.logps_rejected,
            self.kl,
            self.batches,
            self.nll,
            self.log_odds_ratio,
            self.log_odds,
        ]
    }

    /// The sums from [`Self::values`].
    pub fn from_values(v: &[f64; 14]) -> PrefSums {
        PrefSums {
            pairs: v[0],
            loss: v[1],
            rewards_chosen: v[2],
            rewards_rejected: v[3],
            chosen: v[4],
            rejected: v[5],
            accuracies: v[6],
            logps_chosen: v[7],
            logps_rejected: v[8],
            kl: v[9],
            batches: v[10],
            nll: v[11],
            log_odds_ratio: v[12],
            log_odds: v[13],
        }
    }

    /// The metrics (TRL's names with dots), prefixed (`eval.`, or none for a step).
    pub fn metrics(&self, kind: ObjectiveKind, prefix: &str) -> Vec<(String, f64)> {
        let n = self.pairs.max(1.0);
        let (c, r) = (self.chosen.max(1.0), self.rejected.max(1.0));
        let mut out = vec![("loss", self.loss / n)];
        if kind == ObjectiveKind::Kto {
            out.extend([
                ("rewards.chosen", self.rewards_chosen / c),
                ("rewards.rejected", self.rewards_rejected / r),
                (
                    "rewards.margins",
                    self.rewards_chosen / c - self.rewards_rejected / r,
                ),
                ("logps.chosen", self.logps_chosen / c),
                ("logps.rejected", self.logps_rejected / r),
                ("kl", self.kl / self.batches.max(1.0)),
            ]);
        } else {
            out.extend([
                ("rewards.chosen", self.rewards_chosen / n),
                ("rewards.rejected", self.rewards_rejected / n),
                (
                    "rewards.margins",
                    (self.rewards_chosen - self.rewards_rejected) / n,
                ),
                ("rewards.accuracies", self.accuracies / n),
                ("logps.chosen", self.logps_chosen / n),
                ("logps.rejected", self.logps_rejected / n),
            ]);
        }
        if matches!(kind, ObjectiveKind::Orpo | ObjectiveKind::Simpo) {
            out.push(("nll_loss", self.nll / self.batches.max(1.0)));
        }
        if kind == ObjectiveKind::Orpo {
            out.extend([
                ("log_odds_ratio", self.log_odds_ratio / n),
                ("log_odds_chosen", self.log_odds / n),
            ]);
        }
        out.into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect()
    }
}

/// The preference task.
pub struct PreferenceTask {
    axes: (String, String),
    pub objective: Objective,
    /// The sums of the steps' micro-batches since the last [`PreferenceTask::take`].
    step: std::sync::Mutex<PrefSums>,
}

impl PreferenceTask {
    pub fn new(axes: (String, String), objective: Objective) -> PreferenceTask {
        PreferenceTask {
            axes,
            objective,
            step: Default::default(),
        }
    }
}

/// The sequences of a batch in order, each its tokens and where its completion starts; the
/// number of pairs (or rows), and KTO's labels.
struct Rows {
    seqs: Vec<(Vec<i64>, usize)>,
    pairs: usize,
    labels: Vec<bool>,
}

fn joined(prompt: &[i64], completion: &[i64]) -> (Vec<i64>, usize) {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(completion);
    (ids, prompt.len())
}

/// The sequences of `items`: pairs as chosen then rejected; unpaired rows as their
/// completions, then each prompt with the previous row's completion.
fn rows(items: &[&Example], kind: ObjectiveKind) -> Result<Rows> {
    let wrong = |what: &str| {
        Error::Config(format!(
            "[objective] kind = \"{}\" trains on {what}; the data holds something else",
            kind.name()
        ))
    };
    let b = items.len();
    if kind == ObjectiveKind::Kto {
        let mut rows: Vec<(&[i64], &[i64], bool)> = vec![];
        for e in items {
            let Example::Unpaired {
                prompt,
                completion,
                label,
            } = e
            else {
                return Err(wrong("unpaired rows (prompt, completion, label)"));
            };
            rows.push((prompt, completion, *label));
        }
        let mut seqs: Vec<(Vec<i64>, usize)> = rows.iter().map(|r| joined(r.0, r.1)).collect();
        for i in 0..b {
            seqs.push(joined(rows[i].0, rows[(i + b - 1) % b].1));
        }
        let labels = rows.iter().map(|r| r.2).collect();
        return Ok(Rows {
            seqs,
            pairs: b,
            labels,
        });
    }
    let mut chosen = vec![];
    let mut rejected = vec![];
    for e in items {
        let Example::Pair {
            prompt,
            chosen: c,
            rejected: r,
        } = e
        else {
            return Err(wrong("preference pairs (prompt, chosen, rejected)"));
        };
        chosen.push(joined(prompt, c));
        rejected.push(joined(prompt, r));
    }
    chosen.extend(rejected);
    Ok(Rows {
        seqs: chosen,
        pairs: b,
        labels: vec![],
    })
}

/// Per sequence: the sum of `tokens` where `mask` is 1, and the number of such tokens.
fn masked_sums(tokens: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let dim = [1i64];
    let sum = tokens
        .f_mul(mask)
        .and_then(|g| g.f_sum_dim_intlist(dim.as_slice(), false, Kind::Float))
        .ctx("preference: log-probabilities")?;
    let count = mask
        .f_sum_dim_intlist(dim.as_slice(), false, Kind::Float)
        .ctx("preference: completion lengths")?;
    Ok((sum, count))
}

/// `-log σ(x)`, stably.
fn neg_logsigmoid(x: &Tensor) -> Result<Tensor> {
    x.f_neg()
        .and_then(|n| n.f_softplus())
        .ctx("preference: log sigmoid")
}

/// `log(1 - e^x)` for x < 0, stably (TRL's `log1mexp`).
fn log1mexp(x: &Tensor) -> Result<Tensor> {
    // log(-expm1(x)) near 0, log1p(-exp(x)) further away.
    let near = x
        .f_expm1()
        .and_then(|e| e.f_neg())
        .and_then(|e| e.f_log())
        .ctx("orpo")?;
    let far = x
        .f_exp()
        .and_then(|e| e.f_neg())
        .and_then(|e| e.f_log1p())
        .ctx("orpo")?;
    let cond = x.f_gt(-std::f64::consts::LN_2).ctx("orpo")?;
    near.f_where_self(&cond, &far).ctx("orpo")
}

/// A scalar tensor's value.
fn value(t: &Tensor) -> Result<f64> {
    t.f_double_value(&[]).ctx("preference: metrics")
}

/// A 1-D tensor's sum.
fn total(t: &Tensor) -> Result<f64> {
    value(&t.f_sum(Kind::Double).ctx("preference: metrics")?)
}

/// The loss of one batch (the mean over its pairs or rows), and its sums.
struct Computed {
    loss: Tensor,
    sums: PrefSums,
}

impl PreferenceTask {
    /// The per-sequence log-probabilities of the model's output `y` on `b`'s sequences, and
    /// the completions' lengths.
    pub fn logps(&self, y: &Output, b: &Batch) -> Result<(Tensor, Tensor)> {
        masked_sums(&self.tokens(y, b)?, &b.mask)
    }

    /// The log-probability of each target of `b` under the output `y`.
    fn tokens(&self, y: &Output, b: &Batch) -> Result<Tensor> {
        Ok(
            y.token_logps(&self.axes.0, &self.axes.1, &b.targets, false)?
                .0,
        )
    }

    fn compute(&self, y: &Output, b: &Batch) -> Result<Computed> {
        let p = b.pref.as_ref().ok_or_else(|| {
            Error::Config("a preference objective needs a preference batch".into())
        })?;
        let tokens = self.tokens(y, b)?;
        let (logps, counts) = masked_sums(&tokens, &b.mask)?;
        let o = &self.objective;
        let reference = || {
            p.reference
                .as_ref()
                .ok_or_else(|| Error::Config("the reference log-probabilities are missing".into()))
        };
        match o.kind {
            ObjectiveKind::Kto => kto(o, p, &logps, reference()?),
            ObjectiveKind::Dpo | ObjectiveKind::Ipo => {
                paired_with_reference(o, p.pairs, &logps, &counts, reference()?)
            }
            ObjectiveKind::Orpo | ObjectiveKind::Simpo => {
                let nll = chosen_nll(o.kind, p.pairs, &tokens, b)?;
                paired_alone(o, p.pairs, &logps, &counts, &nll)
            }
            ObjectiveKind::Lm => Err(Error::Config(
                "the next-token objective is not a preference objective".into(),
            )),
        }
    }
}

/// The first and second halves of a per-sequence tensor (chosen and rejected).
fn halves(t: &Tensor, n: usize) -> Result<(Tensor, Tensor)> {
    let n = n as i64;
    Ok((
        t.f_narrow(0, 0, n).ctx("preference")?,
        t.f_narrow(0, n, n).ctx("preference")?,
    ))
}

/// Rewards, accuracy and log-probability sums of pairs whose chosen and rejected rewards are
/// `rc` and `rr`.
fn pair_sums(rc: &Tensor, rr: &Tensor, c: &Tensor, r: &Tensor, n: usize) -> Result<PrefSums> {
    let (rc, rr) = (rc.f_detach().ctx("rewards")?, rr.f_detach().ctx("rewards")?);
    let acc = rc
        .f_gt_tensor(&rr)
        .and_then(|a| a.f_to_kind(Kind::Double))
        .ctx("rewards")?;
    Ok(PrefSums {
        pairs: n as f64,
        rewards_chosen: total(&rc)?,
        rewards_rejected: total(&rr)?,
        accuracies: total(&acc)?,
        logps_chosen: total(&c.f_detach().ctx("logps")?)?,
        logps_rejected: total(&r.f_detach().ctx("logps")?)?,
        batches: 1.0,
        ..PrefSums::default()
    })
}

/// DPO and IPO: the log-ratios against the reference.
fn paired_with_reference(
    o: &Objective,
    n: usize,
    logps: &Tensor,
    counts: &Tensor,
    reference: &Tensor,
) -> Result<Computed> {
    let (c, r) = halves(logps, n)?;
    let (refc, refr) = halves(reference, n)?;
    let (nc, nr) = halves(counts, n)?;
    let lc = c.f_sub(&refc).ctx("dpo")?;
    let lr = r.f_sub(&refr).ctx("dpo")?;
    let per_pair = if o.kind == ObjectiveKind::Ipo {
        // ((r_c/|c| - r_r/|r|) - 1/(2 tau))^2, the lengths at least 1 (TRL's IPO).
        let ac = lc.f_div(&nc.f_clamp_min(1.0)?).ctx("ipo")?;
        let ar = lr.f_div(&nr.f_clamp_min(1.0)?).ctx("ipo")?;
        ac.f_sub(&ar)
            .and_then(|d| d.f_sub_scalar(1.0 / (2.0 * o.beta)))
            .and_then(|d| d.f_square())
            .ctx("ipo")?
    } else {
        // -(1-e) log s(b d) - e log s(-b d).
        let d = lc
            .f_sub(&lr)
            .and_then(|d| d.f_mul_scalar(o.beta))
            .ctx("dpo")?;
        let e = o.label_smoothing;
        let a = neg_logsigmoid(&d)?.f_mul_scalar(1.0 - e).ctx("dpo")?;
        let z = neg_logsigmoid(&d.f_neg().ctx("dpo")?)?
            .f_mul_scalar(e)
            .ctx("dpo")?;
        a.f_add(&z).ctx("dpo")?
    };
    let loss = per_pair.f_mean(Kind::Float).ctx("dpo")?;
    let mut sums = pair_sums(
        &lc.f_mul_scalar(o.beta).ctx("rewards")?,
        &lr.f_mul_scalar(o.beta).ctx("rewards")?,
        &c,
        &r,
        n,
    )?;
    sums.loss = total(&per_pair.f_detach().ctx("loss")?)?;
    Ok(Computed { loss, sums })
}

/// The chosen sequences' negative log-likelihood per token over the batch (TRL's `nll_loss`):
/// ORPO's over the whole sequences (prompt and completion, as TRL's ORPO trainer), SimPO's
/// over the completions (TRL's CPO trainer).
fn chosen_nll(kind: ObjectiveKind, n: usize, tokens: &Tensor, b: &Batch) -> Result<Tensor> {
    let mask = match (kind, &b.real) {
        (ObjectiveKind::Orpo, Some(real)) => real.tensor().shallow_clone(),
        _ => b.mask.shallow_clone(),
    };
    let n = n as i64;
    let (t, m) = (
        tokens.f_narrow(0, 0, n).ctx("nll")?,
        mask.f_narrow(0, 0, n).ctx("nll")?,
    );
    t.f_mul(&m)
        .and_then(|x| x.f_sum(Kind::Float))
        .and_then(|x| x.f_neg())
        .and_then(|x| x.f_div(&m.f_sum(Kind::Float)?.f_clamp_min(1.0)?))
        .ctx("nll")
}

/// ORPO and SimPO: the mean log-probabilities per completion token, without a reference.
fn paired_alone(
    o: &Objective,
    n: usize,
    logps: &Tensor,
    counts: &Tensor,
    nll: &Tensor,
) -> Result<Computed> {
    let (c, r) = halves(logps, n)?;
    let (nc, nr) = halves(counts, n)?;
    let pc = c.f_div(&nc.f_clamp_min(1.0)?).ctx("orpo")?;
    let pr = r.f_div(&nr.f_clamp_min(1.0)?).ctx("orpo")?;
    // Both report rewards beta * p and the NLL term.
    let mut sums = pair_sums(
        &pc.f_mul_scalar(o.beta)?,
        &pr.f_mul_scalar(o.beta)?,
        &pc,
        &pr,
        n,
    )?;
    sums.nll = value(&nll.f_detach()?)?;
    let loss = if o.kind == ObjectiveKind::Orpo {
        let odds = log1mexp(&pc)?.f_sub(&log1mexp(&pr)?).ctx("orpo")?;
        let log_odds = pc.f_sub(&pr).and_then(|d| d.f_sub(&odds)).ctx("orpo")?;
        let ratio = neg_logsigmoid(&log_odds)?.f_neg().ctx("orpo")?;
        sums.log_odds_ratio = total(&ratio.f_detach()?)?;
        sums.log_odds = total(&log_odds.f_detach()?)?;
        nll.f_sub(&ratio.f_mul_scalar(o.beta)?.f_mean(Kind::Float)?)
            .ctx("orpo")?
    } else {
        // -log s(b (p_c - p_r) - gamma) + nll_weight * nll.
        let d = pc
            .f_sub(&pr)
            .and_then(|d| d.f_mul_scalar(o.beta))
            .and_then(|d| d.f_sub_scalar(o.gamma))
            .ctx("simpo")?;
        neg_logsigmoid(&d)?
            .f_mean(Kind::Float)
            .and_then(|l| l.f_add(&nll.f_mul_scalar(o.nll_weight)?))
            .ctx("simpo")?
    };
    sums.loss = value(&loss.f_detach()?)? * n as f64;
    Ok(Computed { loss, sums })
}

/// KTO: desirable rows λ_D(1 - σ(β(r - z))), undesirable ones λ_U(1 - σ(β(z - r))), with
/// the reference point z = max(0, mean of the mismatched rows' log-ratios), detached.
fn kto(o: &Objective, p: &PrefBatch, logps: &Tensor, reference: &Tensor) -> Result<Computed> {
    let n = p.pairs;
    let (x, kl_rows) = halves(logps, n)?;
    let (refx, ref_kl) = halves(reference, n)?;
    let z = match p.reference_point {
        Some(z) => z,
        None => value(&kl_rows.f_sub(&ref_kl)?.f_mean(Kind::Double)?.f_detach()?)?.max(0.0),
    };
    let ratio = x.f_sub(&refx).ctx("kto")?;
    let labels: Vec<f64> = p.labels.iter().map(|&l| l as u8 as f64).collect();
    let desirable = Tensor::from_slice(&labels)
        .f_to_device(logps.device())
        .and_then(|t| t.f_to_kind(Kind::Float))
        .ctx("kto")?;
    let undesirable = desirable.f_neg()?.f_add_scalar(1.0).ctx("kto")?;
    let sig = |t: Tensor| t.f_mul_scalar(o.beta).and_then(|t| t.f_sigmoid());
    let lose_d = sig(ratio.f_sub_scalar(z)?)?.f_neg()?.f_add_scalar(1.0)?;
    let lose_u = sig(ratio.f_neg()?.f_add_scalar(z)?)?
        .f_neg()?
        .f_add_scalar(1.0)?;
    let per_row = lose_d
        .f_mul(&desirable)?
        .f_mul_scalar(o.desirable_weight)?
        .f_add(
            &lose_u
                .f_mul(&undesirable)?
                .f_mul_scalar(o.undesirable_weight)?,
        )
        .ctx("kto")?;
    let loss = per_row.f_mean(Kind::Float).ctx("kto")?;
    let rewards = ratio.f_detach()?.f_mul_scalar(o.beta).ctx("kto")?;
    let xd = x.f_detach().ctx("kto")?;
    let sums = PrefSums {
        pairs: n as f64,
        loss: total(&per_row.f_detach()?)?,
        rewards_chosen: total(&rewards.f_mul(&desirable)?)?,
        rewards_rejected: total(&rewards.f_mul(&undesirable)?)?,
        chosen: total(&desirable)?,
        rejected: total(&undesirable)?,
        logps_chosen: total(&xd.f_mul(&desirable)?)?,
        logps_rejected: total(&xd.f_mul(&undesirable)?)?,
        kl: z,
        batches: 1.0,
        ..PrefSums::default()
    };
    Ok(Computed { loss, sums })
}

impl Task for PreferenceTask {
    fn batch(&self, items: &[&Example], device: Device) -> Result<Batch> {
        let r = rows(items, self.objective.kind)?;
        let t = r
            .seqs
            .iter()
            .map(|(ids, _)| ids.len().saturating_sub(1))
            .max()
            .unwrap_or(1)
            .max(1);
        let n = r.seqs.len();
        let (mut inp, mut tgt, mut msk) = (vec![0i64; n * t], vec![0i64; n * t], vec![0f32; n * t]);
        let mut real = vec![0f32; n * t];
        for (i, (ids, prompt)) in r.seqs.iter().enumerate() {
            for j in 0..ids.len().saturating_sub(1) {
                inp[i * t + j] = ids[j];
                tgt[i * t + j] = ids[j + 1];
                msk[i * t + j] = (j + 1 >= *prompt) as u8 as f32;
                real[i * t + j] = 1.0;
            }
        }
        let to = |v: Tensor| {
            v.f_reshape([n as i64, t as i64])
                .and_then(|x| x.f_to_device(device))
                .ctx("batch")
        };
        let names = [self.axes.0.as_str(), self.axes.1.as_str()];
        Ok(Batch {
            x: NamedTensor::wrap(to(Tensor::from_slice(&inp))?, &names)?,
            targets: to(Tensor::from_slice(&tgt))?,
            mask: to(Tensor::from_slice(&msk))?,
            side: crate::tree::SideInputs::new(),
            real: Some(NamedTensor::wrap(to(Tensor::from_slice(&real))?, &names)?),
            pref: Some(PrefBatch {
                pairs: r.pairs,
                labels: r.labels,
                reference: None,
                reference_point: None,
            }),
        })
    }

    fn loss(&self, y: &Output, b: &Batch) -> Result<(Tensor, Sums)> {
        let c = self.compute(y, b)?;
        Ok((
            c.loss,
            Sums {
                pref: c.sums,
                ..Sums::default()
            },
        ))
    }

    fn train_loss(&self, y: &Output, b: &Batch) -> Result<Tensor> {
        let c = self.compute(y, b)?;
        let mut s = crate::params::lock(&self.step);
        *s += c.sums;
        Ok(c.loss)
    }

    fn metrics(
        &self,
        sums: Sums,
        _eval: &crate::data::Split,
        _greedy: Greedy<'_>,
    ) -> Result<Map<String, Value>> {
        Ok(sums
            .pref
            .metrics(self.objective.kind, "eval.")
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect())
    }

    fn tokens_per_batch(&self, batch_size: usize) -> usize {
        batch_size
    }

    fn token_level(&self) -> bool {
        true
    }

    fn preference(&self) -> Option<&PreferenceTask> {
        Some(self)
    }
}

impl PreferenceTask {
    /// The sums of the micro-batches trained since the last call.
    pub fn take(&self) -> PrefSums {
        std::mem::take(&mut *crate::params::lock(&self.step))
    }
}
