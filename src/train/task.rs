//! Training tasks: how examples become batches, what the loss is and which eval metrics come
//! out. Language modelling (next-token cross-entropy under a loss mask, perplexity, token
//! accuracy, exact match of greedy completions), classification (cross-entropy, accuracy) and
//! regression (mean squared error).

use super::head::Output;
use super::losses::{masked_cross_entropy, masked_nll, masked_nll_mean, sum_squared_error, Sums};
use crate::base::{Error, Result, TorchContext};
use crate::data::spec::{CsvTask, DataSpec, TaskKind};
use crate::data::Example;
use crate::layers::input::InputRoles;
use crate::named::NamedTensor;
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

/// A batch on the device: the model input, the targets, the loss mask, and the side inputs
/// the model needs for it (per-document `token_positions` and `document_ids` of packed
/// windows).
pub struct Batch {
    pub x: NamedTensor,
    pub targets: Tensor,
    pub mask: Tensor,
    pub side: crate::tree::SideInputs,
    /// 1 at the input's real tokens, 0 at its padding (token sequences; what a router's
    /// load-balancing loss counts).
    pub real: Option<NamedTensor>,
    /// A preference batch's layout, and its reference log-probabilities once computed.
    pub pref: Option<PrefBatch>,
}

/// What a preference batch holds besides its sequences ([`super::preference`]).
pub struct PrefBatch {
    /// Pairs (or KTO rows): the batch has twice as many sequences.
    pub pairs: usize,
    /// KTO: each row's label (true: desirable).
    pub labels: Vec<bool>,
    /// The reference's log-probability of each sequence's completion (DPO, IPO, KTO), set by
    /// the trainer before the loss.
    pub reference: Option<Tensor>,
    /// KTO: the reference point, when the trainer set it (averaged over the ranks).
    pub reference_point: Option<f64>,
}

/// Greedy completion of a prompt by the model being trained: `(prompt, max_new) -> tokens`.
pub type Greedy<'a> = &'a dyn Fn(&[i64], usize) -> Result<Vec<i64>>;

/// What a run trains the model to do.
pub trait Task: Send + Sync {
    /// The batch of `items` on `device`.
    fn batch(&self, items: &[&Example], device: Device) -> Result<Batch>;
    /// The mean loss of the model output `y` on `b` (to back-propagate), and its sums.
    fn loss(&self, y: &Output, b: &Batch) -> Result<(Tensor, Sums)>;
    /// The mean loss alone, for a training step: nothing is read back from the device.
    fn train_loss(&self, y: &Output, b: &Batch) -> Result<Tensor> {
        Ok(self.loss(y, b)?.0)
    }
    /// The eval metrics, from the sums over the eval split and the split itself.
    fn metrics(
        &self,
        sums: Sums,
        eval: &crate::data::Split,
        greedy: Greedy<'_>,
    ) -> Result<Map<String, Value>>;
    /// Tokens (or examples) in one micro-batch of `batch_size`, for throughput.
    fn tokens_per_batch(&self, batch_size: usize) -> usize;
    /// Whether the loss reads one log-probability per token (language modelling and the
    /// preference objectives), so that it may run the token head in chunks.
    fn token_level(&self) -> bool {
        false
    }
    /// The preference task, when the run trains a preference objective.
    fn preference(&self) -> Option<&super::preference::PreferenceTask> {
        None
    }
}

/// The task of `data`, with the model's input axes `(batch, seq or features)`.
pub fn for_data(
    data: &DataSpec,
    objective: &crate::spec::Objective,
    roles: &InputRoles,
    num_features: i64,
    eval_generate: usize,
) -> Box<dyn Task> {
    let axes = (roles.batch.clone(), roles.item_axis().to_string());
    if objective.is_preference() {
        return Box::new(super::preference::PreferenceTask::new(
            axes,
            objective.clone(),
        ));
    }
    match data.task_kind() {
        TaskKind::Features(task) => Box::new(Rows {
            axes,
            num_features: num_features as usize,
            target: match task {
                CsvTask::Classification => RowTarget::Class,
                CsvTask::Regression => RowTarget::Value,
            },
        }),
        TaskKind::LanguageModel => Box::new(LanguageModel {
            axes,
            seq_len: data.seq_len().unwrap_or(1),
            eval_generate,
        }),
    }
}

/// The output rearranged to `[batch, (seq,) classes]` in float32: the output must have the
/// input's axes and exactly one more (the classes or the vocabulary).
pub(crate) fn rearranged(y: &NamedTensor, batch: &str, seq: Option<&str>) -> Result<Tensor> {
    let extra: Vec<String> = y
        .names()
        .iter()
        .filter(|n| *n != batch && Some(n.as_str()) != seq)
        .cloned()
        .collect();
    if extra.len() != 1 || !y.has(batch) || seq.is_some_and(|s| !y.has(s)) {
        return Err(Error::Config(format!(
            "the model output {} should have the axes `{batch}`{} and one more (the classes or vocabulary)",
            y.describe(),
            seq.map(|s| format!(", `{s}`")).unwrap_or_default()
        )));
    }
    let mut order = vec![batch.to_string()];
    order.extend(seq.map(String::from));
    order.push(extra[0].clone());
    y.with_name_order(&order)?
        .tensor()
        .f_to_kind(Kind::Float)
        .ctx("logits")
}

/// Next-token prediction on token sequences: the model sees `ids[..n-1]` and predicts
/// `ids[1..]` where the mask is 1.
pub struct LanguageModel {
    axes: (String, String),
    seq_len: usize,
    eval_generate: usize,
}

impl Task for LanguageModel {
    fn batch(&self, items: &[&Example], device: Device) -> Result<Batch> {
        let t = self.seq_len;
        let b = items.len();
        let mut inp = vec![0i64; b * t];
        let mut tgt = vec![0i64; b * t];
        let mut msk = vec![0f32; b * t];
        let mut real = vec![0f32; b * t];
        let packed = items
            .iter()
            .any(|e| matches!(e, Example::Tokens { docs, .. } if !docs.is_empty()));
        let mut pos = vec![0i64; if packed { b * t } else { 0 }];
        let mut doc = vec![0i64; if packed { b * t } else { 0 }];
        for (i, e) in items.iter().enumerate() {
            if let Example::Tokens {
                ids, mask, docs, ..
            } = e
            {
                let n = ids.len().min(t + 1);
                for j in 0..n.saturating_sub(1) {
                    inp[i * t + j] = ids[j];
                    tgt[i * t + j] = ids[j + 1];
                    msk[i * t + j] = mask[j + 1] as f32;
                    real[i * t + j] = 1.0;
                }
                if packed {
                    let p = crate::data::pack::positions(docs, t);
                    pos[i * t..(i + 1) * t].copy_from_slice(&p);
                    // Padding is a document of its own.
                    let pad = docs.iter().max().map_or(1, |&m| m as i64 + 1);
                    for j in 0..t {
                        doc[i * t + j] = docs.get(j).map_or(pad, |&d| d as i64);
                    }
                }
            }
        }
        let to = |v: Tensor| {
            v.f_reshape([b as i64, t as i64])
                .and_then(|x| x.f_to_device(device))
                .ctx("batch")
        };
        let x = NamedTensor::wrap(
            to(Tensor::from_slice(&inp))?,
            &[self.axes.0.as_str(), self.axes.1.as_str()],
        )?;
        let names = [self.axes.0.as_str(), self.axes.1.as_str()];
        let mut side = crate::tree::SideInputs::new();
        if packed {
            side = side
                .with_tensor(
                    "token_positions",
                    NamedTensor::wrap(to(Tensor::from_slice(&pos))?, &names)?,
                )
                .with_tensor(
                    "document_ids",
                    NamedTensor::wrap(to(Tensor::from_slice(&doc))?, &names)?,
                );
        }
        Ok(Batch {
            x,
            targets: to(Tensor::from_slice(&tgt))?,
            mask: to(Tensor::from_slice(&msk))?,
            side,
            real: Some(NamedTensor::wrap(to(Tensor::from_slice(&real))?, &names)?),
            pref: None,
        })
    }

    fn loss(&self, y: &Output, b: &Batch) -> Result<(Tensor, Sums)> {
        let (logps, hits) = y.token_logps(&self.axes.0, &self.axes.1, &b.targets, true)?;
        let hits = hits.ok_or_else(|| Error::Config("the loss needs the argmax hits".into()))?;
        masked_nll(&logps, &hits, &b.mask)
    }

    fn train_loss(&self, y: &Output, b: &Batch) -> Result<Tensor> {
        let (logps, _) = y.token_logps(&self.axes.0, &self.axes.1, &b.targets, false)?;
        masked_nll_mean(&logps, &b.mask)
    }

    fn metrics(
        &self,
        s: Sums,
        eval: &crate::data::Split,
        greedy: Greedy<'_>,
    ) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        let loss = s.loss / s.count.max(1.0);
        m.insert("eval.loss".into(), json!(loss));
        m.insert("eval.perplexity".into(), json!(loss.exp()));
        m.insert(
            "eval.token_accuracy".into(),
            json!(s.correct / s.count.max(1.0)),
        );
        let mut prompted: Vec<(Vec<i64>, Vec<i64>)> = vec![];
        for e in eval.examples() {
            if prompted.len() >= self.eval_generate {
                break;
            }
            if let Example::Tokens {
                ids, prompt_len, ..
            } = e?
            {
                if prompt_len > 0 && prompt_len <= ids.len() {
                    prompted.push((ids[..prompt_len].to_vec(), ids[prompt_len..].to_vec()));
                }
            }
        }
        if !prompted.is_empty() {
            let mut hits = 0usize;
            for (prompt, want) in &prompted {
                let got = greedy(prompt, want.len() + 2)?;
                // Greedy decoding stops early only at an end token: stopping where the
                // reference has that token (a chat turn's end, before the template's trailing
                // newline) is a match too.
                let stopped_with_it =
                    !got.is_empty() && got.len() < want.len() && want.starts_with(&got);
                if got == *want || stopped_with_it {
                    hits += 1;
                }
            }
            m.insert(
                "eval.exact_match".into(),
                json!(hits as f64 / prompted.len() as f64),
            );
        }
        Ok(m)
    }

    fn tokens_per_batch(&self, batch_size: usize) -> usize {
        batch_size * self.seq_len
    }

    fn token_level(&self) -> bool {
        true
    }
}

/// A batch of numeric rows: features `[batch, features]` and one target per example.
fn row_batch(
    items: &[&Example],
    axes: &(String, String),
    f: usize,
    device: Device,
) -> Result<Batch> {
    let b = items.len();
    let mut xs = vec![0f32; b * f];
    let mut ys = vec![0f32; b];
    for (i, e) in items.iter().enumerate() {
        if let Example::Row { x, y } = e {
            xs[i * f..(i + 1) * f].copy_from_slice(x);
            ys[i] = *y;
        }
    }
    let x = Tensor::from_slice(&xs)
        .f_reshape([b as i64, f as i64])
        .and_then(|x| x.f_to_device(device))
        .ctx("batch")?;
    let y = Tensor::from_slice(&ys).f_to_device(device).ctx("batch")?;
    let mask = y.f_ones_like().ctx("batch")?;
    Ok(Batch {
        x: NamedTensor::wrap(x, &[axes.0.as_str(), axes.1.as_str()])?,
        targets: y,
        mask,
        side: crate::tree::SideInputs::new(),
        real: None,
        pref: None,
    })
}

/// What a row's target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTarget {
    /// An integer class: cross-entropy, accuracy.
    Class,
    /// A number: mean squared error.
    Value,
}

/// Numeric rows: classification (cross-entropy over integer classes, accuracy) or regression
/// (mean squared error on one value per example).
pub struct Rows {
    axes: (String, String),
    num_features: usize,
    target: RowTarget,
}

impl Task for Rows {
    fn batch(&self, items: &[&Example], device: Device) -> Result<Batch> {
        row_batch(items, &self.axes, self.num_features, device)
    }

    fn loss(&self, y: &Output, b: &Batch) -> Result<(Tensor, Sums)> {
        let out = rearranged(&y.logits()?, &self.axes.0, None)?;
        match self.target {
            RowTarget::Class => masked_cross_entropy(&out, &b.targets, &b.mask),
            RowTarget::Value => sum_squared_error(&out, &b.targets, &b.mask),
        }
    }

    fn metrics(
        &self,
        s: Sums,
        _eval: &crate::data::Split,
        _greedy: Greedy<'_>,
    ) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        m.insert("eval.loss".into(), json!(s.loss / s.count.max(1.0)));
        if self.target == RowTarget::Class {
            m.insert("eval.accuracy".into(), json!(s.correct / s.count.max(1.0)));
        }
        Ok(m)
    }

    fn tokens_per_batch(&self, batch_size: usize) -> usize {
        batch_size
    }
}
