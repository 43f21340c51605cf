//! An array as the HTML viewer shows it (treescope's `render_array`): its named axes, the
//! summary line (mean, std, min, max, zeros, NaN and infinity counts, over the whole array) and
//! the values, embedded as little-endian float32 in base64. An array with more values than the
//! page can carry is cut to a leading block (the largest axes halved until it fits), and says so.

use super::page::base64;
use crate::base::{Error, Result};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The summary statistics of an array. Mean, std, min and max are over the finite values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub numel: i64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub zeros: i64,
    pub nan: i64,
    pub posinf: i64,
    pub neginf: i64,
}

fn torch(what: &str) -> impl Fn(tch::TchError) -> Error + '_ {
    move |source| Error::Torch {
        context: format!("array statistics ({what})"),
        source,
    }
}

fn count(t: &Tensor, what: &str) -> Result<i64> {
    t.f_sum(Kind::Int64)
        .and_then(|s| s.f_int64_value(&[]))
        .map_err(torch(what))
}

fn scalar(t: &Tensor, what: &str) -> Result<f64> {
    t.f_double_value(&[]).map_err(torch(what))
}

/// Statistics of `t` (any dtype; computed in float64 on its device).
pub fn stats(t: &Tensor) -> Result<Stats> {
    let e = torch("convert");
    let x = t.f_to_kind(Kind::Double).map_err(&e)?;
    let numel = x.numel() as i64;
    let nan = count(&x.f_isnan().map_err(&e)?, "nan")?;
    let posinf = count(&x.f_isposinf().map_err(&e)?, "inf")?;
    let neginf = count(&x.f_isneginf().map_err(&e)?, "-inf")?;
    let zeros = count(&x.f_eq(0.0).map_err(&e)?, "zeros")?;
    let finite = x.f_isfinite().map_err(&e)?;
    let n = numel - nan - posinf - neginf;
    if n == 0 {
        return Ok(Stats {
            numel,
            mean: f64::NAN,
            std: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            zeros,
            nan,
            posinf,
            neginf,
        });
    }
    let zero = Tensor::from(0.0f64).to_device(x.device());
    let fin = x.f_where_self(&finite, &zero).map_err(&e)?;
    let mean = scalar(&fin.f_sum(Kind::Double).map_err(&e)?, "sum")? / n as f64;
    let dev = fin
        .f_sub_scalar(mean)
        .and_then(|d| d.f_where_self(&finite, &zero))
        .and_then(|d| d.f_square())
        .and_then(|d| d.f_sum(Kind::Double))
        .map_err(&e)?;
    let std = (scalar(&dev, "std")? / n as f64).sqrt();
    let big = Tensor::from(f64::INFINITY).to_device(x.device());
    let min = x
        .f_where_self(&finite, &big)
        .and_then(|m| m.f_min())
        .map_err(&e)?;
    let max = x
        .f_where_self(&finite, &big.f_neg().map_err(&e)?)
        .and_then(|m| m.f_max())
        .map_err(&e)?;
    Ok(Stats {
        numel,
        mean,
        std,
        min: scalar(&min, "min")?,
        max: scalar(&max, "max")?,
        zeros,
        nan,
        posinf,
        neginf,
    })
}

fn num(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else {
        Json::Null
    }
}

impl Stats {
    /// The statistics as JSON (non-finite values as null).
    pub fn to_json(&self) -> Json {
        json!({
            "numel": self.numel, "mean": num(self.mean), "std": num(self.std),
            "min": num(self.min), "max": num(self.max), "zeros": self.zeros,
            "nan": self.nan, "posinf": self.posinf, "neginf": self.neginf,
        })
    }

    /// `mean 0.012 std 1.01 [-3.2, 3.1] zeros 0`, with NaN and infinity counts when there are.
    pub fn line(&self) -> String {
        let mut s = format!(
            "mean {:.4} std {:.4} [{:.4}, {:.4}] zeros {}",
            self.mean, self.std, self.min, self.max, self.zeros
        );
        for (n, what) in [
            (self.nan, "NaN"),
            (self.posinf, "+inf"),
            (self.neginf, "-inf"),
        ] {
            if n > 0 {
                s.push_str(&format!(" {what} {n}"));
            }
        }
        s
    }
}

/// An array ready for the page.
#[derive(Debug, Clone)]
pub struct ArrayView {
    pub name: String,
    /// One name per dimension (`dim0`, `dim1`, ... where the array has none).
    pub axes: Vec<String>,
    pub shape: Vec<i64>,
    pub dtype: String,
    pub stats: Stats,
    /// The leading block embedded (equal to `shape` unless the array was cut).
    pub shown: Vec<i64>,
    /// The embedded values, row-major over `shown`.
    pub values: Vec<f32>,
    /// Item labels per axis (token strings for `seq`), at most `shown` of them.
    pub labels: BTreeMap<String, Vec<String>>,
}

/// The leading block of `shape` with at most `max_values` values: the largest axes halved
/// (rounding up) until it fits.
pub fn leading_block(shape: &[i64], max_values: i64) -> Vec<i64> {
    let mut k: Vec<i64> = shape.iter().map(|&n| n.max(1)).collect();
    let max_values = max_values.max(1);
    while k.iter().product::<i64>() > max_values {
        let Some((i, _)) = k.iter().enumerate().max_by_key(|(_, &n)| n) else {
            break;
        };
        if k[i] <= 1 {
            break;
        }
        k[i] = (k[i] + 1) / 2;
    }
    k
}

impl ArrayView {
    /// A view of `t` with axis names `axes` (padded with `dimN` names), embedding at most
    /// `max_values` values.
    pub fn new(name: &str, t: &Tensor, axes: &[String], max_values: i64) -> Result<ArrayView> {
        let shape = t.size();
        let axes: Vec<String> = (0..shape.len())
            .map(|i| axes.get(i).cloned().unwrap_or_else(|| format!("dim{i}")))
            .collect();
        let stats = stats(t)?;
        let shown = leading_block(&shape, max_values);
        let e = torch("embed");
        let mut block = t.f_to_kind(Kind::Float).map_err(&e)?;
        for (d, &n) in shown.iter().enumerate() {
            if n < shape[d] {
                block = block.f_narrow(d as i64, 0, n).map_err(&e)?;
            }
        }
        let flat = block
            .f_contiguous()
            .and_then(|b| b.f_to_device(tch::Device::Cpu))
            .and_then(|b| b.f_reshape([-1]))
            .map_err(&e)?;
        let values = Vec::<f32>::try_from(&flat).map_err(&e)?;
        Ok(ArrayView {
            name: name.to_string(),
            axes,
            shape,
            dtype: crate::base::dtype::name(t.kind()).to_string(),
            stats,
            shown,
            values,
            labels: BTreeMap::new(),
        })
    }

    /// Labels the items of `axis` (cut to what is shown).
    pub fn label(mut self, axis: &str, labels: Vec<String>) -> ArrayView {
        if let Some(i) = self.axes.iter().position(|a| a == axis) {
            let n = usize::try_from(self.shown[i]).unwrap_or(0);
            self.labels
                .insert(axis.to_string(), labels.into_iter().take(n).collect());
        }
        self
    }

    /// Whether only a leading block is embedded.
    pub fn truncated(&self) -> bool {
        self.shown != self.shape
    }

    /// The view as the page's JSON.
    pub fn to_json(&self) -> Json {
        let bytes: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        json!({
            "name": self.name,
            "axes": self.axes,
            "shape": self.shape,
            "shown": self.shown,
            "dtype": self.dtype,
            "stats": self.stats.to_json(),
            "summary": self.stats.line(),
            "data": base64(&bytes),
            "labels": self.labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_specials_and_skip_them() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let t = Tensor::from_slice(&[
            1.0f32,
            -1.0,
            0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.0,
        ]);
        let s = stats(&t)?;
        assert_eq!(
            (s.numel, s.nan, s.posinf, s.neginf, s.zeros),
            (7, 1, 1, 1, 1)
        );
        assert_eq!((s.min, s.max), (-1.0, 3.0));
        assert!((s.mean - 0.75).abs() < 1e-12);
        let var = (0.0625 + 3.0625 + 0.5625 + 5.0625) / 4.0;
        assert!((s.std - f64::sqrt(var)).abs() < 1e-12);
        assert!(s.line().contains("NaN 1 +inf 1 -inf 1"), "{}", s.line());
        let all_nan = stats(&Tensor::from_slice(&[f32::NAN]))?;
        assert!(all_nan.mean.is_nan() && all_nan.to_json()["mean"].is_null());
        Ok(())
    }

    #[test]
    fn big_arrays_are_cut_to_a_leading_block() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        assert_eq!(leading_block(&[4, 5], 100), vec![4, 5]);
        assert_eq!(leading_block(&[4096, 11008], 65536), vec![256, 172]);
        assert_eq!(leading_block(&[3, 1_000_000_000_000], 10), vec![3, 2]);
        let t = Tensor::arange(24, (Kind::Float, tch::Device::Cpu)).reshape([4, 6]);
        let v = ArrayView::new("x", &t, &["a".into()], 12)?;
        assert_eq!(v.axes, ["a", "dim1"]);
        assert_eq!(v.shown, [4, 3]);
        assert!(v.truncated());
        assert_eq!(
            v.values,
            [0.0, 1., 2., 6., 7., 8., 12., 13., 14., 18., 19., 20.]
        );
        assert_eq!(v.stats.max, 23.0);
        Ok(())
    }
}
