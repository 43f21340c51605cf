//! MXFP4, the format openai ships gpt-oss's experts in: each weight `X` is stored as
//! `X_blocks` (uint8 `[experts, rows, groups, 16]`: two 4-bit codes per byte, the even element
//! in the low nibble, each code an FP4 (E2M1) value) and `X_scales` (uint8 `[experts, rows,
//! groups]`: a power of two per group of 32 elements, biased by 127). pzt dequantizes on load:
//! `value = FP4[code] * 2^(scale - 127)`, laid out as transformers lays the dequantized tensor
//! out (`[experts, groups x 32, rows]`, the checkpoint's rows last), which is the BF16
//! checkpoints' layout.

use crate::base::{Error, Result, TorchContext};
use tch::{Kind, Tensor};

/// The 16 FP4 (E2M1) values by code.
const FP4: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// The float32 tensor that `blocks` and `scales` (of the tensor `name`) encode.
pub fn dequantize(name: &str, blocks: &Tensor, scales: &Tensor) -> Result<Tensor> {
    let (bs, ss) = (blocks.size(), scales.size());
    let ok = bs.len() == 4
        && bs[3] == 16
        && ss == bs[..3]
        && blocks.kind() == Kind::Uint8
        && scales.kind() == Kind::Uint8;
    if !ok {
        return Err(Error::Config(format!(
            "`{name}`: MXFP4 needs uint8 blocks [experts, rows, groups, 16] and uint8 scales [experts, rows, groups], got {:?} blocks {bs:?} and {:?} scales {ss:?}",
            blocks.kind(),
            scales.kind()
        )));
    }
    let (e, rows, groups) = (bs[0], bs[1], bs[2]);
    let ctx = || format!("dequantize `{name}`");
    let lut = Tensor::from_slice(&FP4)
        .f_to_device(blocks.device())
        .ctx(ctx())?;
    let b = blocks.f_to_kind(Kind::Int64).ctx(ctx())?;
    let lo = b.f_bitwise_and(15).ctx(ctx())?;
    let hi = b.f_bitwise_right_shift_tensor_scalar(4).ctx(ctx())?;
    // [.., 16, 2] -> [.., 32]: the low nibble first.
    let codes = Tensor::f_stack(&[lo, hi], -1)
        .and_then(|c| c.f_reshape([e, rows, groups, 32]))
        .ctx(ctx())?;
    let values = lut
        .f_index_select(0, &codes.f_reshape([-1]).ctx(ctx())?)
        .and_then(|v| v.f_reshape([e, rows, groups, 32]))
        .ctx(ctx())?;
    let exp = scales
        .f_to_kind(Kind::Float)
        .and_then(|s| s.f_sub_scalar(127.0))
        .and_then(|s| s.f_exp2())
        .and_then(|s| s.f_unsqueeze(-1))
        .ctx(ctx())?;
    values
        .f_mul(&exp)
        .and_then(|v| v.f_reshape([e, rows, groups * 32]))
        .and_then(|v| v.f_transpose(1, 2))
        .and_then(|v| v.f_contiguous())
        .ctx(ctx())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_scales_decode_to_their_values() -> Result<()> {
        // One expert, one row, one group: codes 0..16 then 15..=0, scale 2^1.
        let mut bytes = vec![];
        let codes: Vec<u8> = (0..16u8).chain((0..16u8).rev()).collect();
        for pair in codes.chunks(2) {
            bytes.push(pair[0] | (pair[1] << 4));
        }
        let blocks = Tensor::from_slice(&bytes).reshape([1, 1, 1, 16]);
        let scales = Tensor::from_slice(&[128u8]).reshape([1, 1, 1]);
        let v = dequantize("w", &blocks, &scales)?;
        assert_eq!(v.size(), vec![1, 32, 1]);
        let got: Vec<f32> = Vec::try_from(v.reshape([-1]))
            .map_err(|e: tch::TchError| Error::Config(e.to_string()))?;
        let want: Vec<f32> = codes.iter().map(|&c| FP4[c as usize] * 2.0).collect();
        assert_eq!(got, want);
        // Wrong shapes are named.
        let e = dequantize("w", &blocks.reshape([1, 1, 16]), &scales);
        assert!(e.is_err_and(|e| e.to_string().contains("`w`: MXFP4 needs")));
        Ok(())
    }
}
