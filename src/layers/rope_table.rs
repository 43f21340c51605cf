//! The cos and signed-sin tables of `ApplyRoPE`, computed once per configuration, device and
//! dtype for positions `0..n` (grown by doubling) and shared by every layer and call: a forward
//! pass then looks its positions up (a view for the default `0..len`, one `index_select`
//! otherwise) instead of recomputing the angles in every attention layer at every step.

use super::rope::ApplyRoPE;
use crate::base::{Result, TorchContext};
use std::collections::HashMap;
use std::sync::Mutex;
use tch::{Kind, Tensor};

/// Positions at or past this (or negative ones) are computed directly, never tabled.
const MAX_TABLED: i64 = 1 << 20;

/// (configuration, rotated dims, device, dtype) -> (cos, signed sin), each `[n, d]`.
type Tables = HashMap<(String, i64, String, String), (Tensor, Tensor)>;

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

/// The angles `position * inv_freq` for `pos` (any integer shape), as `[..., d / 2]` float.
pub(crate) fn angles(inv: &Tensor, pos: &Tensor) -> Result<Tensor> {
    pos.f_to_kind(Kind::Float)
        .and_then(|p| p.f_unsqueeze(-1))
        .and_then(|p| p.f_mul(inv))
        .ctx("rope angles")
}

/// `cos(theta)` repeated twice along the last dim and `[-sin(theta), sin(theta)]`, in `kind`
/// (computed in float32, then cast).
pub(crate) fn cos_sin(ang: &Tensor, kind: Kind) -> Result<(Tensor, Tensor)> {
    let cos = Tensor::f_cat(&[ang, ang], -1)
        .and_then(|a| a.f_cos())
        .and_then(|c| c.f_to_kind(kind))
        .ctx("rope")?;
    let sin = ang.f_sin().ctx("rope")?;
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
    let key = (
        format!("{}/{:?}", rope.max_wavelength, rope.scaling),
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
        let inv = crate::backend::to_device_like(&rope.inv_freq(rd)?, like)?;
        let all = Tensor::f_arange(n, (Kind::Int64, like.device())).ctx("rope")?;
        let made = cos_sin(&angles(&inv, &all)?, like.kind())?;
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
mod tests {
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
            let (c2, s2) = cos_sin(&angles(&inv, &p)?, Kind::Float)?;
            assert_eq!(cos.size(), c2.size());
            assert!(max_diff(&cos, &c2)? < 1e-6 && max_diff(&sin, &s2)? < 1e-6);
        }
        let neg = Tensor::from_slice(&[4i64, -1]);
        assert!(lookup(&rope, 16, &neg, None, &like)?.is_none());
        let far = Tensor::from_slice(&[MAX_TABLED]);
        assert!(lookup(&rope, 16, &far, None, &like)?.is_none());
        Ok(())
    }
}
