//! Rotary position embeddings (`ApplyRoPE`), rotate-half convention (as HF `transformers`):
//!
//! `inv_freq[i] = 1 / max_wavelength^(2i / d)` for `i < ceil(d/2)`, where `d` is the number of
//! rotated dims (all of the embedding axis, or its leading `rotary_dims`; an odd `d` rotates
//! `d + 1` dims, as transformers does for GPT-NeoX);
//! `theta[p, i] = position[p] * inv_freq[i]`, `cos`/`sin` are `theta` repeated twice along the
//! dim, and `y = x * cos + rotate_half(x) * sin` with `rotate_half([x1, x2]) = [-x2, x1]`.
//! Dims past `rotary_dims` pass through unchanged.
//!
//! Positions come from the side input `token_positions` (integer, with the `seq_axis` axis, and
//! maybe batch axes) or default to `0..len(seq_axis)`.
//!
//! Scaling: `linear` divides positions by `factor`; `llama3` rescales the low frequencies as in
//! Llama 3.1 (`factor`, `low_freq_factor`, `high_freq_factor`,
//! `original_max_position_embeddings`).

use crate::base::{Error, Result, TorchContext};
use crate::named::NamedTensor;
use crate::tree::{Layer, Node, SideInputs, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use tch::{Kind, Tensor};

/// RoPE frequency scaling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN: frequencies blended between interpolated (`/ factor`) and original by a linear
    /// ramp over the dims whose rotations in `original_max_position_embeddings` fall between
    /// `beta_slow` and `beta_fast`, and cos/sin multiplied by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        /// Round the ramp's ends outwards (transformers' `truncate`, default true).
        truncate: bool,
        attention_factor: f64,
    },
    /// LongRoPE (Phi-3): each frequency divided by its own factor, `short_factor` while the
    /// sequence fits `original_max_position_embeddings` and `long_factor` beyond, and cos/sin
    /// multiplied by `attention_factor`.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: f64,
        attention_factor: f64,
    },
    /// Dynamic NTK: past `max_position_embeddings` positions, the base grows with the sequence
    /// (`base * (factor * n / max - (factor - 1))^(d / (d - 2))` for `n` positions).
    Dynamic {
        factor: f64,
        max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// Checks the factors: finite and positive, with Llama 3's high frequency factor above its
    /// low one (the smoothing divides by their difference).
    pub fn check(&self) -> std::result::Result<(), String> {
        let pos = |name: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!(
                    "rope scaling `{name}` must be a finite number > 0, got {v}"
                ))
            }
        };
        match self {
            RopeScaling::Linear { factor } => pos("factor", *factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                pos("factor", *factor)?;
                pos("low_freq_factor", *low_freq_factor)?;
                pos("high_freq_factor", *high_freq_factor)?;
                pos(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope scaling `high_freq_factor` ({high_freq_factor}) must be above `low_freq_factor` ({low_freq_factor})"
                    ));
                }
                Ok(())
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                ..
            } => {
                pos("factor", *factor)?;
                pos(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                pos("beta_fast", *beta_fast)?;
                pos("beta_slow", *beta_slow)?;
                pos("attention_factor", *attention_factor)
            }
            RopeScaling::Dynamic {
                factor,
                max_position_embeddings,
            } => {
                pos("factor", *factor)?;
                pos("max_position_embeddings", *max_position_embeddings)
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                for f in short_factor.iter().chain(long_factor) {
                    pos("short_factor and long_factor", *f)?;
                }
                if short_factor.len() != long_factor.len() {
                    return Err(
                        "rope scaling `short_factor` and `long_factor` differ in length".into(),
                    );
                }
                pos(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                pos("attention_factor", *attention_factor)
            }
        }
    }

    /// What cos and sin are multiplied by (YaRN's attention factor; 1 otherwise).
    pub fn attention_factor(&self) -> f64 {
        match self {
            RopeScaling::Yarn {
                attention_factor, ..
            }
            | RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor,
            _ => 1.0,
        }
    }
}

/// YaRN's frequencies for `d` rotated dims of base `base`, from the unscaled ones `inv`.
fn yarn(inv: &Tensor, d: i64, base: f64, s: &RopeScaling) -> Result<Tensor> {
    let RopeScaling::Yarn {
        factor,
        original_max_position_embeddings: omax,
        beta_fast,
        beta_slow,
        truncate,
        ..
    } = s
    else {
        return Ok(inv.shallow_clone());
    };
    let dim = d as f64;
    // The dim whose wavelength makes `rotations` turns in the original context.
    let at = |rotations: f64| {
        dim * (omax / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let (mut low, mut high) = (at(*beta_fast), at(*beta_slow));
    if *truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
    if low == high {
        high += 0.001;
    }
    let ramp = Tensor::f_arange(d / 2, (Kind::Float, tch::Device::Cpu))
        .and_then(|i| i.f_sub_scalar(low))
        .and_then(|i| i.f_div_scalar(high - low))
        .and_then(|r| r.f_clamp(0.0, 1.0))
        .ctx("yarn ramp")?;
    // Extrapolated (the original frequency) where the ramp is 0, interpolated where it is 1.
    let keep = ramp.f_neg().and_then(|r| r.f_add_scalar(1.0)).ctx("yarn")?;
    let interpolated = inv.f_div_scalar(*factor).ctx("yarn")?;
    interpolated
        .f_mul(&ramp)
        .and_then(|a| a.f_add(&inv.f_mul(&keep)?))
        .ctx("yarn")
}

fn default_seq() -> String {
    "seq".into()
}
fn default_positions() -> String {
    "token_positions".into()
}
fn default_wavelength() -> f64 {
    10_000.0
}

/// Applies rotary position embeddings along `embedding_axis`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplyRoPE {
    pub embedding_axis: String,
    #[serde(default = "default_seq")]
    pub seq_axis: String,
    #[serde(default = "default_wavelength")]
    pub max_wavelength: f64,
    /// Rotate only the leading `rotary_dims` of the embedding axis (GPT-NeoX's rotary_pct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotary_dims: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<RopeScaling>,
    #[serde(default = "default_positions")]
    pub positions_input: String,
    /// Rotate adjacent pairs `(2i, 2i+1)` (GPT-J's layout, GLM-4's) instead of the halves
    /// `(i, i + d/2)`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interleaved: bool,
}

impl ApplyRoPE {
    /// RoPE over `embedding_axis` with the defaults (wavelength 10000, all dims, no scaling).
    pub fn new(embedding_axis: &str) -> Self {
        ApplyRoPE {
            embedding_axis: embedding_axis.into(),
            seq_axis: default_seq(),
            max_wavelength: default_wavelength(),
            rotary_dims: None,
            scaling: None,
            positions_input: default_positions(),
            interleaved: false,
        }
    }

    /// What cos and sin are multiplied by (YaRN's attention factor; 1 otherwise).
    pub fn attention_factor(&self) -> f64 {
        self.scaling
            .as_ref()
            .map_or(1.0, RopeScaling::attention_factor)
    }

    /// The inverse frequencies (float32, `[d/2]`), scaling applied, for a sequence that fits
    /// the original context (LongRoPE's short factors).
    pub fn inv_freq(&self, d: i64) -> Result<Tensor> {
        self.inv_freq_at(d, 0)
    }

    /// The length a LongRoPE or dynamic NTK layer chooses its frequencies by: the largest
    /// position plus one (`default_len` when the positions are `0..len`); 0 for the other
    /// scalings, which do not depend on it.
    fn seq_len_of(&self, pos: &Tensor, default_len: Option<i64>) -> Result<i64> {
        if !matches!(
            self.scaling,
            Some(RopeScaling::LongRope { .. } | RopeScaling::Dynamic { .. })
        ) {
            return Ok(0);
        }
        if let Some(n) = default_len {
            return Ok(n);
        }
        if pos.numel() == 0 || crate::backend::is_meta(pos) {
            return Ok(0);
        }
        pos.f_max()
            .and_then(|m| m.f_int64_value(&[]))
            .map(|m| m.saturating_add(1))
            .ctx("rope")
    }

    /// Whether positions up to `seq_len` take LongRoPE's long factors.
    fn long(&self, seq_len: i64) -> bool {
        matches!(&self.scaling, Some(RopeScaling::LongRope { original_max_position_embeddings, .. })
            if seq_len as f64 > *original_max_position_embeddings)
    }

    /// The inverse frequencies for a sequence of `seq_len` positions.
    pub fn inv_freq_at(&self, d: i64, seq_len: i64) -> Result<Tensor> {
        let wavelength = match &self.scaling {
            Some(RopeScaling::Dynamic {
                factor,
                max_position_embeddings: max,
            }) if seq_len as f64 > *max && d > 2 => {
                let grown = factor * seq_len as f64 / max - (factor - 1.0);
                self.max_wavelength * grown.powf(d as f64 / (d - 2) as f64)
            }
            _ => self.max_wavelength,
        };
        let idx = Tensor::f_arange_start_step(0, d, 2, (Kind::Int64, tch::Device::Cpu))
            .and_then(|t| t.f_to_kind(Kind::Float))
            .ctx("rope")?;
        let exponent = idx.f_div_scalar(d as f64).ctx("rope")?;
        let base = Tensor::from(wavelength as f32);
        let inv = base
            .f_pow(&exponent)
            .and_then(|p| p.f_reciprocal())
            .ctx("rope")?;
        match &self.scaling {
            None | Some(RopeScaling::Dynamic { .. }) => Ok(inv),
            Some(y @ RopeScaling::Yarn { .. }) => yarn(&inv, d, self.max_wavelength, y),
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            }) => {
                let f = if self.long(seq_len) {
                    long_factor
                } else {
                    short_factor
                };
                if f.len() as i64 != (d + 1) / 2 {
                    return Err(Error::Config(format!(
                        "ApplyRoPE: LongRoPE has {} factors for {} frequencies",
                        f.len(),
                        (d + 1) / 2
                    )));
                }
                let f: Vec<f32> = f.iter().map(|&x| x as f32).collect();
                inv.f_div(&Tensor::from_slice(&f)).ctx("longrope")
            }
            Some(RopeScaling::Linear { factor }) => inv.f_div_scalar(*factor).ctx("rope scaling"),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let v: Vec<f32> = Vec::<f32>::try_from(&inv).ctx("rope")?;
                let low_wl = original_max_position_embeddings / low_freq_factor;
                let high_wl = original_max_position_embeddings / high_freq_factor;
                let out: Vec<f32> = v
                    .iter()
                    .map(|&f| {
                        let f = f as f64;
                        let wl = 2.0 * std::f64::consts::PI / f;
                        let r = if wl < high_wl {
                            f
                        } else if wl > low_wl {
                            f / factor
                        } else {
                            let smooth = (original_max_position_embeddings / wl - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        };
                        r as f32
                    })
                    .collect();
                Ok(Tensor::from_slice(&out))
            }
        }
    }
}

/// Integer positions along `axis` of size `len`: the side input `key` when present (it must
/// have `axis`, or an axis `seq` of the same length, which is renamed), else `0..len`.
pub(crate) fn positions(
    side: &SideInputs,
    key: &str,
    axis: &str,
    len: i64,
    like: &Tensor,
) -> Result<NamedTensor> {
    if let Some(p) = side.tensor(key)? {
        if p.has(axis) {
            return Ok(p.clone());
        }
        if p.has("seq") && p.size_of("seq")? == len {
            return p.rename(&[("seq", axis)]);
        }
        return Err(Error::Axis(format!(
            "side input `{key}` should have axis `{axis}` (size {len}), got {}",
            p.describe()
        )));
    }
    let t = if crate::backend::is_meta(like) {
        crate::backend::meta_empty(&[len], Kind::Int64)?
    } else {
        Tensor::f_arange(len, (Kind::Int64, like.device())).ctx("positions")?
    };
    NamedTensor::wrap(t, &[axis])
}

impl Layer for ApplyRoPE {
    crate::layer_common!("ApplyRoPE");
    fn check(&self) -> Result<()> {
        let w = self.max_wavelength;
        super::args::check_number(
            "ApplyRoPE",
            "max_wavelength",
            w,
            w > 0.0 && w.is_finite(),
            "a finite number > 0",
        )?;
        if let Some(sc) = &self.scaling {
            sc.check().map_err(|m| Error::ConfigField {
                field: "scaling".into(),
                message: format!("ApplyRoPE: {m}"),
            })?;
        }
        match self.rotary_dims {
            Some(d) if d < 1 => {
                super::args::check_number("ApplyRoPE", "rotary_dims", d as f64, false, "at least 1")
            }
            _ => Ok(()),
        }
    }
    fn summary(&self) -> String {
        let mut s = format!(
            "{} over {}, wavelength {}",
            self.embedding_axis, self.seq_axis, self.max_wavelength
        );
        if let Some(d) = self.rotary_dims {
            s.push_str(&format!(", first {d} dims"));
        }
        if self.interleaved {
            s.push_str(", interleaved");
        }
        s
    }
    fn forward(&self, _n: &Node, x: Value, side: &SideInputs) -> Result<Value> {
        let x = x.into_tensor()?;
        let e = x.size_of(&self.embedding_axis).map_err(|_| {
            Error::Axis(format!(
                "ApplyRoPE: the input lacks axis `{}` ({})",
                self.embedding_axis,
                x.describe()
            ))
        })?;
        let s = x.size_of(&self.seq_axis).map_err(|_| {
            Error::Axis(format!(
                "ApplyRoPE: the input lacks axis `{}` ({})",
                self.seq_axis,
                x.describe()
            ))
        })?;
        // An odd count `d` (GPT-NeoX's head size x rotary_pct) rotates `d + 1` dims, with the
        // frequencies of `d` (as transformers does: its cos/sin have 2 * ceil(d / 2) entries).
        let rd = self.rotary_dims.unwrap_or(e);
        let d = rd + rd % 2;
        if d > e || rd <= 0 {
            return Err(Error::Config(format!(
                "ApplyRoPE: rotary dims must be 1 to the `{}` size {e} (rounded up to even), got {rd}",
                self.embedding_axis
            )));
        }
        let pos = positions(side, &self.positions_input, &self.seq_axis, s, x.tensor())?;
        let default_len = side.tensor(&self.positions_input)?.is_none().then_some(s);
        let tabled = if crate::backend::is_meta(x.tensor()) {
            None
        } else {
            lookup(self, rd, pos.tensor(), default_len, x.tensor())?
        };
        // rotate_half(x) * sin, with rotate_half(x) = [-x2, x1], is [x2, x1] * [-sin, sin]:
        // one flip of the halves (its backward is a flip too) and the sign folded into sin.
        let (cos, signed) = match tabled {
            Some(t) => t,
            None => {
                let seq_len = self.seq_len_of(pos.tensor(), default_len)?;
                let inv =
                    crate::backend::to_device_like(&self.inv_freq_at(rd, seq_len)?, x.tensor())?;
                let ang = angles(&inv, pos.tensor())?;
                cos_sin(&ang, x.kind(), self.attention_factor())?
            }
        };
        let (cos, signed) = match self.interleaved {
            true => interleave(&cos, &signed)?,
            false => (cos, signed),
        };
        let cos = NamedTensor::from_parts(cos, pos.names().to_vec())?;
        let sin = NamedTensor::from_parts(signed, pos.names().to_vec())?;
        let xp = x.untag_prefix(&[self.embedding_axis.as_str()])?;
        let half = d / 2;
        let x_rot = if d < e {
            xp.nmap(|t| t.f_narrow(-1, 0, d).ctx("rope"))?
        } else {
            xp.clone()
        };
        let swapped = self.swapped(&x_rot, half)?;
        let y = x_rot.mul(&cos)?.add(&swapped.mul(&sin)?)?;
        let y = y.with_name_order(xp.names())?;
        let y = if d < e {
            let pass = xp.nmap(|t| t.f_narrow(-1, d, e - d).ctx("rope"))?;
            let cat = Tensor::f_cat(&[y.tensor(), pass.tensor()], -1).ctx("rope")?;
            NamedTensor::from_parts(cat, xp.names().to_vec())?
        } else {
            y
        };
        Ok(y.tag(&[self.embedding_axis.as_str()])?.into())
    }
}

impl ApplyRoPE {
    /// The rotated dims with each pair swapped, for the sign-folded sin: the halves as
    /// `[x2, x1]`, or adjacent pairs as `[x1, x0, x3, x2, ...]` when interleaved.
    fn swapped(&self, x_rot: &NamedTensor, half: i64) -> Result<NamedTensor> {
        // (libtorch has no meta kernel for flip; on the meta device the shape is all there is.)
        let meta = crate::backend::is_meta(x_rot.tensor());
        x_rot.nmap(|t| {
            if meta {
                return Ok(t.shallow_clone());
            }
            let (shape, dim) = match self.interleaved {
                true => ([half, 2], -1),
                false => ([2, half], -2),
            };
            t.f_unflatten(-1, shape)
                .and_then(|h| h.f_flip([dim]))
                .and_then(|h| h.f_flatten(-2, -1))
                .ctx("rotate_half")
        })
    }
}

// ---- The shared cos/sin tables ----
// The cos and signed-sin tables of `ApplyRoPE`, computed once per configuration, device and
// dtype for positions `0..n` (grown by doubling) and shared by every layer and call: a forward
// pass then looks its positions up (a view for the default `0..len`, one `index_select`
// otherwise) instead of recomputing the angles in every attention layer at every step.
/// Positions at or past this (or negative ones) are computed directly, never tabled.
const MAX_TABLED: i64 = 1 << 20;

/// (configuration, rotated dims, device, dtype) -> (cos, signed sin), each `[n, d]`.
type Tables = HashMap<(String, i64, String, String), (Tensor, Tensor)>;

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

/// The half-layout tables (`[c, c]`, `[-s, s]`) in the interleaved layout (`[c0, c0, c1, c1,
/// ...]`, `[-s0, s0, -s1, s1, ...]`).
fn interleave(cos: &Tensor, signed: &Tensor) -> Result<(Tensor, Tensor)> {
    let half = cos.size().last().copied().unwrap_or(0) / 2;
    let c = cos
        .f_narrow(-1, 0, half)
        .and_then(|c| c.f_repeat_interleave_self_int(2, -1, None))
        .ctx("rope interleave")?;
    let s = Tensor::f_stack(
        &[
            signed.f_narrow(-1, 0, half).ctx("rope")?,
            signed.f_narrow(-1, half, half).ctx("rope")?,
        ],
        -1,
    )
    .and_then(|x| x.f_flatten(-2, -1))
    .ctx("rope interleave")?;
    Ok((c, s))
}

/// The angles `position * inv_freq` for `pos` (any integer shape), as `[..., d / 2]` float.
pub(crate) fn angles(inv: &Tensor, pos: &Tensor) -> Result<Tensor> {
    pos.f_to_kind(Kind::Float)
        .and_then(|p| p.f_unsqueeze(-1))
        .and_then(|p| p.f_mul(inv))
        .ctx("rope angles")
}

/// `cos(theta)` repeated twice along the last dim and `[-sin(theta), sin(theta)]`, times
/// `scale` (YaRN's attention factor), in `kind` (computed in float32, then cast).
pub(crate) fn cos_sin(ang: &Tensor, kind: Kind, scale: f64) -> Result<(Tensor, Tensor)> {
    let scaled = |t: Tensor| -> Result<Tensor> {
        match scale == 1.0 {
            true => Ok(t),
            false => t.f_mul_scalar(scale).ctx("rope attention factor"),
        }
    };
    let cos = Tensor::f_cat(&[ang, ang], -1)
        .and_then(|a| a.f_cos())
        .ctx("rope")?;
    let cos = scaled(cos)?.f_to_kind(kind).ctx("rope")?;
    let sin = scaled(ang.f_sin().ctx("rope")?)?;
    let signed = Tensor::f_cat(&[&sin.f_neg().ctx("rope")?, &sin], -1)
        .and_then(|c| c.f_to_kind(kind))
        .ctx("rope")?;
    Ok((cos, signed))
}

/// The tabled cos and signed sin at `pos` (shape `pos.size() + [d]`), or `None` when the
/// positions are outside the tabled range. `default_len`: the positions are `0..len`, known
/// without reading them.
pub(crate) fn lookup(
    rope: &ApplyRoPE,
    rd: i64,
    pos: &Tensor,
    default_len: Option<i64>,
    like: &Tensor,
) -> Result<Option<(Tensor, Tensor)>> {
    let needed = match default_len {
        Some(len) => len,
        None => {
            if pos.numel() == 0 {
                return Ok(None);
            }
            let lo = pos.f_min().and_then(|m| m.f_int64_value(&[])).ctx("rope")?;
            let hi = pos.f_max().and_then(|m| m.f_int64_value(&[])).ctx("rope")?;
            if lo < 0 {
                return Ok(None);
            }
            hi.saturating_add(1)
        }
    };
    if needed > MAX_TABLED {
        return Ok(None);
    }
    // Dynamic NTK's frequencies change with every length past the original context.
    if matches!(&rope.scaling, Some(RopeScaling::Dynamic { max_position_embeddings: m, .. }) if needed as f64 > *m)
    {
        return Ok(None);
    }
    let key = (
        format!(
            "{}/{:?}/{}",
            rope.max_wavelength,
            rope.scaling,
            rope.long(needed)
        ),
        rd,
        format!("{:?}", like.device()),
        format!("{:?}", like.kind()),
    );
    let mut guard = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let tables = guard.get_or_insert_with(HashMap::new);
    let fits = tables.get(&key).is_some_and(|(c, _)| c.size()[0] >= needed);
    if !fits {
        let n = (needed.max(1) as u64).next_power_of_two().max(512) as i64;
        let _ng = tch::no_grad_guard();
        let inv = crate::backend::to_device_like(&rope.inv_freq_at(rd, needed)?, like)?;
        let all = Tensor::f_arange(n, (Kind::Int64, like.device())).ctx("rope")?;
        let made = cos_sin(&angles(&inv, &all)?, like.kind(), rope.attention_factor())?;
        tables.insert(key.clone(), made);
    }
    let Some((cos, sin)) = tables.get(&key) else {
        return Ok(None);
    };
    let pick = |t: &Tensor| -> Result<Tensor> {
        match default_len {
            Some(len) => t.f_narrow(0, 0, len).ctx("rope"),
            None => {
                let d = t.size()[1];
                let mut shape = pos.size();
                shape.push(d);
                t.f_index_select(0, &pos.f_reshape([-1]).ctx("rope")?)
                    .and_then(|r| r.f_reshape(shape.as_slice()))
                    .ctx("rope")
            }
        }
    };
    Ok(Some((pick(cos)?, pick(sin)?)))
}

#[cfg(test)]
mod table_tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        a.f_sub(b)
            .and_then(|d| d.f_abs())
            .and_then(|d| d.f_max())
            .and_then(|d| d.f_double_value(&[]))
            .ctx("diff")
    }

    #[test]
    fn tabled_values_equal_the_direct_ones_and_odd_positions_fall_back() -> Result<()> {
        let rope = ApplyRoPE {
            max_wavelength: 5000.0,
            ..ApplyRoPE::new("projection")
        };
        let like = Tensor::f_zeros([1], (Kind::Float, tch::Device::Cpu)).ctx("like")?;
        let inv = rope.inv_freq(16)?;
        // Positions past the first table (512) make it grow; batch-shaped positions keep
        // their shape.
        let pos = Tensor::from_slice(&[0i64, 3, 700, 5, 1999, 2])
            .f_reshape([2, 3])
            .ctx("pos")?;
        for default_len in [None, Some(7)] {
            let p = match default_len {
                Some(n) => Tensor::f_arange(n, (Kind::Int64, tch::Device::Cpu)).ctx("arange")?,
                None => pos.shallow_clone(),
            };
            let (cos, sin) = lookup(&rope, 16, &p, default_len, &like)?.ok_or_else(|| {
                crate::base::Error::Config("positions in range should be tabled".into())
            })?;
            let (c2, s2) = cos_sin(&angles(&inv, &p)?, Kind::Float, 1.0)?;
            assert_eq!(cos.size(), c2.size());
            // The same float32 angles through libtorch's cos and sin, on a table and on the
            // positions alone: equal but for the last bits, which the vectorized and scalar
            // loops may round apart (this once differed by more than 1e-6 in CI, under load,
            // and never in 80 runs here). A wrong table is off by O(1).
            let (dc, ds) = (max_diff(&cos, &c2)?, max_diff(&sin, &s2)?);
            assert!(dc < 1e-5 && ds < 1e-5, "cos differs by {dc}, sin by {ds}");
        }
        let neg = Tensor::from_slice(&[4i64, -1]);
        assert!(lookup(&rope, 16, &neg, None, &like)?.is_none());
        let far = Tensor::from_slice(&[MAX_TABLED]);
        assert!(lookup(&rope, 16, &far, None, &like)?.is_none());
        Ok(())
    }
}
