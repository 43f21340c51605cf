//! Quantized storage of frozen weights (QLoRA's bases): NF4 exactly as torchao defines it, and
//! int8 with a per-output-channel absmax scale. The operations follow torchao's one by one, in
//! the weight's own dtype, so that a dequantized NF4 weight is bit for bit torchao's
//! `to_nf4(W, 64, 256).get_original_weight()` (tests/fixtures/make_quant_fixtures.py).
//!
//! NF4 (torchao's `NF4Tensor`): the weight, flattened, in blocks of `block` values (64); each
//! value divided by its block's absmax is coded as the nearest of 16 NormalFloat levels, two
//! codes per byte (the first value in the high half). The block absmaxes are double-quantized:
//! less their mean, in blocks of `scaler_block` (256) scaled by `256 / (2 * absmax)`, rounded
//! to int8.

use crate::base::{Error, Result, TorchContext};
use tch::{Kind, Tensor};

/// torchao's 16 NF4 levels.
const NF4_LEVELS: [f64; 16] = [
    -1.0000, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0000, 0.0796, 0.1609, 0.2461,
    0.3379, 0.4407, 0.5626, 0.7230, 1.0000,
];

/// The code bytes [`Nf4::dequantize`] looks up at once (their int32 indices take 1 MiB).
const DEQUANTIZE_SLICE: i64 = 1 << 18;

/// An NF4-quantized weight.
#[derive(Debug)]
pub struct Nf4 {
    /// Two 4-bit level indices per byte (uint8, numel / 2).
    pub codes: Tensor,
    /// The block absmaxes less their mean, quantized (int8, one per block).
    pub scalers: Tensor,
    /// The factor of each block of scalers (the weight's dtype).
    pub factors: Tensor,
    /// The mean of the block absmaxes (a 0-dim tensor of the weight's dtype).
    pub mean: Tensor,
    pub shape: Vec<i64>,
    pub kind: Kind,
    pub block: i64,
    pub scaler_block: i64,
}

/// The levels in `kind` on the device of `like` (from their decimal values, as torchao makes
/// them).
fn levels(kind: Kind, like: &Tensor) -> Result<Tensor> {
    Tensor::from_slice(&NF4_LEVELS)
        .f_to_device(like.device())
        .and_then(|t| t.f_to_kind(kind))
        .ctx("nf4 levels")
}

/// The absmax of each block of `block` values of the flat `t`.
fn block_absmax(t: &Tensor, block: i64) -> Result<Tensor> {
    let n = t.size()[0] / block;
    t.f_view([n, block])
        .and_then(|b| b.f_abs())
        .and_then(|b| b.f_max_dim(1, false))
        .map(|(v, _)| v)
        .ctx("nf4: block absmax")
}

impl Nf4 {
    /// Quantizes `w` (float32, bfloat16 or float16) in blocks of `block` values whose absmaxes
    /// are double-quantized in blocks of `scaler_block`: its size must be a multiple of
    /// `block * scaler_block`.
    pub fn quantize(w: &Tensor, block: i64, scaler_block: i64) -> Result<Nf4> {
        let kind = w.kind();
        if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(Error::Config(format!(
                "nf4: a {kind:?} weight cannot be quantized (float32, bfloat16 or float16)"
            )));
        }
        let n = w.numel() as i64;
        if block < 2 || block % 2 != 0 || scaler_block < 1 || n % (block * scaler_block) != 0 {
            return Err(Error::Config(format!(
                "nf4: a weight of {n} values is not made of blocks of {block} x {scaler_block}"
            )));
        }
        let flat = w.f_reshape([-1]).ctx("nf4")?;
        let (scalers, factors, mean) = double_quantize(&flat, block, scaler_block)?;
        let codes = codes_of(&flat, block, &levels(kind, w)?)?;
        Ok(Nf4 {
            codes,
            scalers,
            factors,
            mean,
            shape: w.size(),
            kind,
            block,
            scaler_block,
        })
    }

    /// The weight the codes stand for, in its dtype (torchao's `get_original_weight`).
    pub fn dequantize(&self) -> Result<Tensor> {
        self.dequantize_in(DEQUANTIZE_SLICE)
    }

    /// [`Nf4::dequantize`], looking up `slice` code bytes at a time.
    fn dequantize_in(&self, slice: i64) -> Result<Tensor> {
        // Each code byte holds two levels (high nibble first): one lookup of a 256-entry table
        // of level pairs gives both, already in order, with no intermediate per nibble.
        let nf4 = levels(self.kind, &self.codes)?;
        let bytes = Tensor::f_arange(256, (Kind::Int64, self.codes.device())).ctx("nf4")?;
        let pairs = Tensor::f_stack(
            &[
                nf4.f_index_select(0, &bytes.f_bitwise_right_shift_tensor_scalar(4)?)?,
                nf4.f_index_select(0, &bytes.f_bitwise_and(15)?)?,
            ],
            -1,
        )
        .ctx("nf4: level pairs")?;
        let nsb = self.scalers.size()[0] / self.scaler_block;
        let scalers = self
            .scalers
            .f_view([nsb, self.scaler_block])
            .and_then(|s| s.f_div(&self.factors.f_unsqueeze(-1)?))
            .and_then(|s| s.f_reshape([-1, 1]))
            .and_then(|s| s.f_to_kind(self.kind))
            .and_then(|s| s.f_add(&self.mean))
            .ctx("nf4: scalers")?;
        // The codes are looked up a slice at a time straight into the output, which is then
        // scaled in place: the only allocation as large as the weight is the weight itself
        // (a lookup of all the codes at once made three such temporaries, and the heap kept
        // their memory, fragmented, through the step).
        let n = self.codes.size()[0];
        let out = Tensor::f_empty([n, 2], (self.kind, self.codes.device())).ctx("nf4")?;
        let mut start = 0;
        while start < n {
            let len = slice.min(n - start);
            let index = self.codes.f_narrow(0, start, len)?.f_to_kind(Kind::Int)?;
            let _ = pairs
                .f_index_select_out(&out.f_narrow(0, start, len)?, 0, &index)
                .ctx("nf4: dequantize")?;
            start += len;
        }
        let nb = scalers.size()[0];
        let mut blocks = out.f_view([nb, self.block]).ctx("nf4: dequantize")?;
        let _ = blocks.f_mul_(&scalers).ctx("nf4: dequantize")?;
        out.f_reshape(self.shape.as_slice()).ctx("nf4: dequantize")
    }

    /// The bytes it takes (codes, scalers, factors, mean).
    pub fn bytes(&self) -> i64 {
        let size = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        size(&self.codes) + size(&self.scalers) + size(&self.factors) + size(&self.mean)
    }
}

/// torchao's `double_quantize_scalers`: the int8 scalers, their factors and the mean.
fn double_quantize(
    flat: &Tensor,
    block: i64,
    scaler_block: i64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let s1 = block_absmax(flat, block)?;
    let mean = s1.f_mean(None::<Kind>).ctx("nf4: scaler mean")?;
    let s = s1.f_sub(&mean).ctx("nf4")?;
    let nsb = s.size()[0] / scaler_block;
    let absmax = block_absmax(&s, scaler_block)?;
    // 256 / (2 * absmax), as Python writes it: (2 * absmax).reciprocal() * 256.
    let factors = absmax
        .f_mul_scalar(2)
        .and_then(|x| x.f_reciprocal())
        .and_then(|x| x.f_mul_scalar(256))
        .ctx("nf4: factors")?;
    let scalers = s
        .f_view([nsb, scaler_block])
        .and_then(|b| b.f_mul(&factors.f_unsqueeze(-1)?))
        .and_then(|b| b.f_round())
        .and_then(|b| b.f_clamp(-128, 127))
        .and_then(|b| b.f_reshape([-1]))
        .and_then(|b| b.f_to_kind(Kind::Int8))
        .ctx("nf4: scalers")?;
    Ok((scalers, factors, mean))
}

/// torchao's `convert_to_norm_float_weight`: each value over its block's absmax, coded as the
/// nearest level, two codes per byte.
fn codes_of(flat: &Tensor, block: i64, nf4: &Tensor) -> Result<Tensor> {
    let n = flat.size()[0];
    let scales = block_absmax(flat, block)?;
    let scaled = flat
        .f_view([n / block, block])
        .and_then(|b| b.f_div(&scales.f_unsqueeze(-1)?))
        .and_then(|b| b.f_reshape([-1]))
        .ctx("nf4: scaled")?;
    // In chunks (bounding the [chunk, 16] distances, as torchao does), small enough for the
    // distances to stay in the cache: 16,384 values quantize 1.5x faster than torchao's 2^20.
    let chunk = 1i64 << 14;
    let mut parts = vec![];
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let idx = scaled
            .f_narrow(0, start, len)
            .and_then(|v| v.f_unsqueeze(-1))
            .and_then(|v| v.f_sub(nf4))
            .and_then(|d| d.f_abs())
            .and_then(|d| d.f_min_dim(-1, false))
            .and_then(|(_, i)| i.f_to_kind(Kind::Uint8))
            .ctx("nf4: nearest level")?;
        parts.push(idx);
        start += len;
    }
    let q = Tensor::f_cat(&parts, 0).ctx("nf4")?;
    let even = q.f_slice(0, 0, n, 2).ctx("nf4")?;
    let odd = q.f_slice(0, 1, n, 2).ctx("nf4")?;
    even.f_bitwise_left_shift_tensor_scalar(4)
        .and_then(|h| h.f_bitwise_or_tensor(&odd))
        .and_then(|c| c.f_to_kind(Kind::Uint8))
        .ctx("nf4: codes")
}

/// An int8 weight-only quantized weight: per output channel (the first axis), its absmax over
/// 127 as the scale, the values rounded to the nearest step.
#[derive(Debug)]
pub struct Int8 {
    /// `[out, ...]` int8.
    pub values: Tensor,
    /// `[out, 1, ...]` in the weight's dtype.
    pub scales: Tensor,
    pub kind: Kind,
}

impl Int8 {
    /// Quantizes `w`, whose first axis is the output channels.
    pub fn quantize(w: &Tensor) -> Result<Int8> {
        let kind = w.kind();
        if w.dim() < 1 {
            return Err(Error::Config("int8: a weight needs an output axis".into()));
        }
        let dims: Vec<i64> = (1..w.dim() as i64).collect();
        let absmax = w
            .f_abs()
            .and_then(|a| a.f_amax(dims.as_slice(), true))
            .ctx("int8: absmax")?;
        // An all-zero channel keeps the scale 1 (its values are 0 anyway).
        let scales = absmax
            .f_div_scalar(127.0)
            .and_then(|s| s.f_where_scalarother(&absmax.f_gt(0.0)?, 1.0))
            .and_then(|s| s.f_to_kind(kind))
            .ctx("int8: scales")?;
        let values = w
            .f_div(&scales)
            .and_then(|v| v.f_round())
            .and_then(|v| v.f_clamp(-127, 127))
            .and_then(|v| v.f_to_kind(Kind::Int8))
            .ctx("int8: values")?;
        Ok(Int8 {
            values,
            scales,
            kind,
        })
    }

    /// The weight the values stand for, in its dtype.
    pub fn dequantize(&self) -> Result<Tensor> {
        let mut w = self.values.f_to_kind(self.kind).ctx("int8: dequantize")?;
        let _ = w.f_mul_(&self.scales).ctx("int8: dequantize")?;
        Ok(w)
    }

    /// The bytes it takes.
    pub fn bytes(&self) -> i64 {
        let size = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
        size(&self.values) + size(&self.scales)
    }
}

/// A frozen Linear weight kept quantized. The weight is quantized in Hugging Face's layout
/// (`[out, in]`, output channels first, as torchao quantizes a checkpoint's tensor): pzt's
/// `[in..., out...]` weight is seen as `[in, out]` and transposed first, and back after.
#[derive(Debug)]
pub struct Quantized {
    pub format: Format,
    /// The weight's own shape (`[in..., out...]`).
    pub shape: Vec<i64>,
    /// Its input elements (the rows of `[in, out]`).
    pub inputs: i64,
}

/// A quantization format and its data.
#[derive(Debug)]
pub enum Format {
    Nf4(Nf4),
    Int8(Int8),
}

impl Quantized {
    /// Quantizes the weight `w` (`[in..., out...]`, `inputs` input elements) as `nf4` or `int8`.
    pub fn new(w: &Tensor, inputs: i64, format: &str) -> Result<Quantized> {
        let n = w.numel() as i64;
        if inputs <= 0 || n % inputs != 0 {
            return Err(Error::Config(format!(
                "quantize: a weight of {n} values has no {inputs} inputs"
            )));
        }
        let hf = w
            .f_reshape([inputs, n / inputs])
            .and_then(|t| t.f_transpose(0, 1))
            .and_then(|t| t.f_contiguous())
            .ctx("quantize: layout")?;
        let format = match format {
            "nf4" => Format::Nf4(Nf4::quantize(&hf, 64, 256)?),
            "int8" => Format::Int8(Int8::quantize(&hf)?),
            other => {
                return Err(Error::Config(format!(
                    "quantize: unknown format `{other}` (nf4 or int8)"
                )))
            }
        };
        Ok(Quantized {
            format,
            shape: w.size(),
            inputs,
        })
    }

    /// The weight, dequantized in its dtype and shape.
    pub fn dequantize(&self) -> Result<Tensor> {
        let hf = match &self.format {
            Format::Nf4(q) => q.dequantize()?,
            Format::Int8(q) => q.dequantize()?,
        };
        hf.f_transpose(0, 1)
            .and_then(|t| t.f_reshape(self.shape.as_slice()))
            .ctx("quantize: layout")
    }

    /// The bytes it takes.
    pub fn bytes(&self) -> i64 {
        match &self.format {
            Format::Nf4(q) => q.bytes(),
            Format::Int8(q) => q.bytes(),
        }
    }

    /// The weight's dtype.
    pub fn kind(&self) -> Kind {
        match &self.format {
            Format::Nf4(q) => q.kind,
            Format::Int8(q) => q.kind,
        }
    }

    /// `nf4` or `int8`.
    pub fn name(&self) -> &'static str {
        match &self.format {
            Format::Nf4(_) => "nf4",
            Format::Int8(_) => "int8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn reference() -> std::result::Result<Vec<(String, Tensor)>, tch::TchError> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/nf4-reference.safetensors");
        Tensor::read_safetensors(p)
    }

    fn get<'a>(r: &'a [(String, Tensor)], k: &str) -> std::result::Result<&'a Tensor, String> {
        r.iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("no `{k}` in the reference"))
    }

    fn bits_equal(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size()
            && a.kind() == b.kind()
            && a.f_view_dtype(Kind::Uint8)
                .ok()
                .zip(b.f_view_dtype(Kind::Uint8).ok())
                .is_some_and(|(x, y)| x.equal(&y))
    }

    #[test]
    fn nf4_equals_torchao_bit_for_bit() -> TestResult {
        let r = reference()?;
        let names = ["f32", "bf16", "f32_two", "bf16_two"];
        for name in names {
            let w = get(&r, &format!("{name}.weight"))?;
            let q = Nf4::quantize(w, 64, 256)?;
            for (part, mine) in [
                ("codes", &q.codes),
                ("scalers", &q.scalers),
                ("factors", &q.factors),
            ] {
                let want = get(&r, &format!("{name}.{part}"))?;
                assert!(bits_equal(mine, want), "{name}: {part}");
            }
            let mean = get(&r, &format!("{name}.mean"))?;
            assert!(bits_equal(&q.mean.reshape([1]), mean), "{name}: mean");
            // Whole, and in slices that do not divide the codes (as a large weight is).
            for d in [q.dequantize()?, q.dequantize_in(1000)?] {
                assert!(
                    bits_equal(&d, get(&r, &format!("{name}.dequantized"))?),
                    "{name}"
                );
            }
            // 4 bits a value, and a little for the scalers.
            assert!(
                q.bytes() * 7 < w.numel() as i64 * 4,
                "{name}: {}",
                q.bytes()
            );
        }
        assert_eq!(r.len(), names.len() * 6);
        let cpu = tch::Device::Cpu;
        assert!(Nf4::quantize(&Tensor::zeros([100], (Kind::Float, cpu)), 64, 256).is_err());
        assert!(Nf4::quantize(&Tensor::zeros([16384], (Kind::Int64, cpu)), 64, 256).is_err());
        Ok(())
    }

    #[test]
    fn int8_round_trips_within_half_a_step() -> TestResult {
        let w = Tensor::randn([48, 80], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let _ = w.get(3).f_zero_();
        let q = Int8::quantize(&w)?;
        let d = q.dequantize()?;
        let err = (&d - &w).abs();
        let half_step = &q.scales / 2.0 + 1e-7;
        assert!(bool::try_from(err.le_tensor(&half_step).all())?);
        assert_eq!(d.get(3).abs().max().double_value(&[]), 0.0);
        assert_eq!(q.values.kind(), Kind::Int8);
        assert!(q.bytes() < w.numel() as i64 * 4 / 3);
        Ok(())
    }
}
