//! A fingerprint of parameter values: what a checkpoint that saves only the trained parameters
//! (a LoRA adapter, a partly frozen model) records about the parameters it did not save, so
//! that resuming, evaluating or exporting it against a base model whose weights changed is
//! caught instead of silently giving another model.

use super::Parameter;
use crate::base::seed::{fnv1a, mix};
use crate::base::{Result, TorchContext};
use tch::{Device, Kind};

/// Elements hashed per copy to the CPU (bounds the memory the hashing needs).
const CHUNK: i64 = 1 << 24;

/// A 64-bit hex digest of the labels, shapes, dtypes and values of `params` (in label order;
/// the same values on any device give the same digest).
pub fn fingerprint(params: &[Parameter]) -> Result<String> {
    let mut ps: Vec<&Parameter> = params.iter().collect();
    ps.sort_by(|a, b| a.label().cmp(b.label()));
    let mut h = fnv1a(b"pzt parameter fingerprint v1");
    for p in ps {
        h = mix(h, fnv1a(p.label().as_bytes()));
        let t = p.value();
        for d in t.size() {
            h = mix(h, d as u64);
        }
        h = mix(h, fnv1a(crate::base::dtype::name(t.kind()).as_bytes()));
        let flat = t
            .f_detach()
            .and_then(|x| x.f_reshape([-1]))
            .ctx("fingerprint")?;
        let n = flat.size()[0];
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            let part = flat
                .f_narrow(0, start, len)
                .and_then(|x| x.f_to_device(Device::Cpu))
                .and_then(|x| x.f_contiguous())
                .and_then(|x| x.f_view_dtype(Kind::Uint8))
                .ctx("fingerprint")?;
            let bytes = Vec::<u8>::try_from(&part).ctx("fingerprint")?;
            for c in bytes.chunks(8) {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                h = mix(h, u64::from_le_bytes(w));
            }
            start += len;
        }
    }
    Ok(format!("{h:016x}"))
}
