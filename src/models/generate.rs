//! Generation with a key/value cache held in state variables.
//!
//! [`with_kv_cache`] returns a copy of a model (sharing its parameters) in which every
//! `Attention`'s `input_to_key` and `input_to_value` end with a `KVCache` layer: it appends the
//! new keys (values) to the ones it holds, along `kv_seq`, and returns them all. The decoding
//! loop feeds only the new tokens, with side inputs `token_positions` (their positions) and
//! `kv_token_positions` (all cached positions), so RoPE and the causal (or sliding-window)
//! masks see the right offsets. Greedy decoding with the cache equals greedy decoding that
//! recomputes the whole sequence every step (tested).

use crate::backend::{seeded_random, Distribution};
use crate::base::{Error, Result, TorchContext};
use crate::layers::kv_cache::with_kv_cache;
use crate::named::NamedTensor;
use crate::params::RandomStream;
use crate::tree::{Node, SideInputs};
use tch::{Device, Kind, Tensor};

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

/// Picks a token from `logits` (`[vocab]`, float).
pub fn pick(logits: &Tensor, s: &Sampling, stream: &RandomStream) -> Result<i64> {
    if s.temperature <= 0.0 {
        return logits
            .f_argmax(-1, false)
            .and_then(|a| a.f_int64_value(&[]))
            .ctx("argmax");
    }
    let v: Vec<f64> = Vec::<f64>::try_from(
        &logits
            .f_to_kind(Kind::Double)
            .and_then(|l| l.f_to_device(Device::Cpu))
            .ctx("sample")?,
    )
    .ctx("sample")?;
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<(usize, f64)> = v
        .iter()
        .enumerate()
        .map(|(i, l)| (i, ((l - max) / s.temperature).exp()))
        .collect();
    p.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    if let Some(k) = s.top_k {
        p.truncate(k.max(1));
    }
    let total: f64 = p.iter().map(|x| x.1).sum();
    if let Some(tp) = s.top_p {
        let mut acc = 0.0;
        let mut keep = 0;
        for (j, (_, q)) in p.iter().enumerate() {
            acc += q / total;
            keep = j + 1;
            if acc >= tp {
                break;
            }
        }
        p.truncate(keep.max(1));
    }
    let total: f64 = p.iter().map(|x| x.1).sum();
    let u = seeded_random(
        stream.next_key(),
        Distribution::Uniform,
        &[1],
        Kind::Double,
        Device::Cpu,
    )?
    .f_double_value(&[0])
    .ctx("sample")?
        * total;
    let mut acc = 0.0;
    for (i, q) in &p {
        acc += q;
        if u < acc {
            return Ok(*i as i64);
        }
    }
    Ok(p.last().map(|x| x.0 as i64).unwrap_or(0))
}

/// Axis names of a language model: (batch, seq, vocab).
#[derive(Debug, Clone)]
pub struct LmAxes {
    pub batch: String,
    pub seq: String,
    pub vocab: String,
}

impl Default for LmAxes {
    fn default() -> Self {
        LmAxes {
            batch: "batch".into(),
            seq: "seq".into(),
            vocab: "vocab".into(),
        }
    }
}

impl LmAxes {
    /// The axes of a language model whose input has `roles` (its vocabulary axis `vocab`).
    pub fn of(roles: &crate::layers::input::InputRoles) -> LmAxes {
        LmAxes {
            batch: roles.batch.clone(),
            seq: roles.item_axis().to_string(),
            ..LmAxes::default()
        }
    }

    /// The order `[batch, seq, vocab]` of an output; when it has no `vocab` axis but exactly
    /// one axis besides `batch` and `seq`, that one is the vocabulary.
    fn output_order(&self, y: &NamedTensor) -> Vec<String> {
        let others: Vec<&String> = y
            .names()
            .iter()
            .filter(|n| **n != self.batch && **n != self.seq)
            .collect();
        let vocab = match others.as_slice() {
            [only] if !y.has(&self.vocab) => (*only).clone(),
            _ => self.vocab.clone(),
        };
        vec![self.batch.clone(), self.seq.clone(), vocab]
    }
}

fn positions(from: i64, to: i64, axis: &str, device: Device) -> Result<NamedTensor> {
    NamedTensor::wrap(
        Tensor::f_arange_start(from, to, (Kind::Int64, device)).ctx("positions")?,
        &[axis],
    )
}

/// What a forward of [`step`] computes logits for.
#[derive(Clone, Copy, PartialEq)]
enum Positions {
    /// Every position fed.
    All,
    /// The last position alone (the token head runs on it only).
    Last,
}

/// Logits `[seq, vocab]` for `tokens` at positions `start..` (a batch of one), or `[1, vocab]`
/// for the last of them.
#[allow(clippy::too_many_arguments)]
fn step(
    model: &Node,
    tokens: &[i64],
    start: i64,
    kv_len: i64,
    ax: &LmAxes,
    device: Device,
    extra: &SideInputs,
    at: Positions,
) -> Result<Tensor> {
    let t = Tensor::from_slice(tokens)
        .f_reshape([1, tokens.len() as i64])
        .and_then(|x| x.f_to_device(device))
        .ctx("tokens")?;
    let x = NamedTensor::wrap(t, &[ax.batch.as_str(), ax.seq.as_str()])?;
    // Positions are implicit (0, 1, ...) when the whole sequence is fed; only a cached step
    // (new tokens after `start` cached ones) passes them.
    let side = if start == 0 && kv_len == tokens.len() as i64 {
        extra.clone()
    } else {
        extra
            .clone()
            .with_tensor(
                "token_positions",
                positions(start, start + tokens.len() as i64, &ax.seq, device)?,
            )
            .with_tensor(
                "kv_token_positions",
                positions(0, kv_len, "kv_seq", device)?,
            )
    };
    let y = match at {
        Positions::All => model.forward(x, &side)?.into_tensor()?,
        Positions::Last => super::token_head::last_position(model, x, &ax.seq, &side)?,
    };
    let y = y.with_name_order(&ax.output_order(&y)).map_err(|_| {
        Error::Config(format!(
            "the model output {} should have axes `{}`, `{}`, `{}`",
            y.describe(),
            ax.batch,
            ax.seq,
            ax.vocab
        ))
    })?;
    y.tensor()
        .f_select(0, 0)
        .and_then(|l| l.f_to_kind(Kind::Float))
        .ctx("logits")
}

/// Generates up to `max_new` tokens after `prompt`, calling `emit` with each token as it is
/// picked; stops after any token in `eos`. With `use_cache` the model runs once on the prompt
/// and then on one token per step; without, it recomputes the whole sequence every step.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &Node,
    prompt: &[i64],
    max_new: usize,
    eos: &[i64],
    sampling: &Sampling,
    ax: &LmAxes,
    device: Device,
    use_cache: bool,
    mut emit: impl FnMut(i64),
) -> Result<Vec<i64>> {
    if prompt.is_empty() {
        return Err(Error::Config("generate: the prompt is empty".into()));
    }
    let _ng = tch::no_grad_guard();
    let stream = RandomStream::new(sampling.seed);
    let cached = if use_cache {
        Some(with_kv_cache(model)?)
    } else {
        None
    };
    let mut seq = prompt.to_vec();
    let mut out = vec![];
    let mut fed = 0usize;
    for _ in 0..max_new {
        let logits = match &cached {
            Some(m) => {
                let new = &seq[fed..];
                let l = step(
                    m,
                    new,
                    fed as i64,
                    seq.len() as i64,
                    ax,
                    device,
                    &SideInputs::new(),
                    Positions::Last,
                )?;
                fed = seq.len();
                l
            }
            None => step(
                model,
                &seq,
                0,
                seq.len() as i64,
                ax,
                device,
                &SideInputs::new(),
                Positions::Last,
            )?,
        };
        let last = logits.f_select(0, logits.size()[0] - 1).ctx("logits")?;
        let tok = pick(&last, sampling, &stream)?;
        emit(tok);
        out.push(tok);
        seq.push(tok);
        if eos.contains(&tok) {
            break;
        }
    }
    Ok(out)
}

/// Logits `[seq, vocab]` of a whole sequence.
pub fn logits(model: &Node, tokens: &[i64], ax: &LmAxes, device: Device) -> Result<Tensor> {
    logits_with(model, tokens, ax, &SideInputs::new(), device)
}

/// [`logits`] with side inputs (an `attn_mask` for `ApplyExplicitAttentionMask`).
pub fn logits_with(
    model: &Node,
    tokens: &[i64],
    ax: &LmAxes,
    side: &SideInputs,
    device: Device,
) -> Result<Tensor> {
    let _ng = tch::no_grad_guard();
    step(
        model,
        tokens,
        0,
        tokens.len() as i64,
        ax,
        device,
        side,
        Positions::All,
    )
}
