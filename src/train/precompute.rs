//! `[objective] precompute_reference = true`: the reference's log-probabilities of every pair's
//! completions, computed once over the train and eval splits before training, kept in a file
//! beside the prepared data, and read by each step instead of running the reference (which is
//! dropped once they are computed). The file is keyed by the data's fingerprint and the
//! reference's parameters, so another data set or reference computes them again.
//!
//! `reference-<key>.f32`: the magic `PZTREF1\0`, the numbers of train and eval pairs (u64 each),
//! then per pair its chosen and rejected log-probabilities (f32, little-endian), the train
//! pairs first.

use crate::base::seed::{fnv1a, mix};
use crate::base::{Error, Result};
use crate::data::{Dataset, Example};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const MAGIC: &[u8; 8] = b"PZTREF1\0";

/// The reference's log-probabilities of each pair of the two splits: (chosen, rejected).
pub struct Precomputed {
    pub train: Vec<(f32, f32)>,
    pub eval: Vec<(f32, f32)>,
}

impl Precomputed {
    /// The reference of the pairs `indices` of a split, laid out as a batch of them is (the
    /// chosen completions, then the rejected).
    pub fn batch(&self, eval: bool, indices: &[usize], device: Device) -> Result<Tensor> {
        let split = if eval { &self.eval } else { &self.train };
        let mut v = Vec::with_capacity(indices.len() * 2);
        for half in [0, 1] {
            for &i in indices {
                let p = split.get(i).ok_or_else(|| {
                    Error::Config(format!("the precomputed reference has no pair {i}"))
                })?;
                v.push(if half == 0 { p.0 } else { p.1 });
            }
        }
        Tensor::from_slice(&v)
            .f_to_device(device)
            .map_err(|e| Error::Config(format!("precomputed reference: {e}")))
    }
}

/// The file of the reference `fingerprint` of `data` in `cache`.
pub fn path(cache: &Path, data: &Dataset, fingerprint: &str) -> Result<PathBuf> {
    let h = mix(data.fingerprint()?, fnv1a(fingerprint.as_bytes()));
    Ok(cache.join(format!("reference-{h:016x}.f32")))
}

/// Reads a file written by [`write`] for splits of `n` pairs (None when absent or not agreeing).
pub fn read(path: &Path, n: (usize, usize)) -> Option<Precomputed> {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let (head, rest) = bytes.split_at_checked(24)?;
    let count = |k: usize| -> Option<usize> {
        let mut w = [0u8; 8];
        w.copy_from_slice(head.get(8 + 8 * k..16 + 8 * k)?);
        usize::try_from(u64::from_le_bytes(w)).ok()
    };
    if &head[..8] != MAGIC || (count(0)?, count(1)?) != n || rest.len() != (n.0 + n.1) * 8 {
        return None;
    }
    let vals: Vec<f32> = rest
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let pairs: Vec<(f32, f32)> = vals.chunks_exact(2).map(|c| (c[0], c[1])).collect();
    let (train, eval) = pairs.split_at(n.0);
    Some(Precomputed {
        train: train.to_vec(),
        eval: eval.to_vec(),
    })
}

/// Writes `p` to `path` (under a temporary name, then renamed: a crash leaves no half file).
pub fn write(path: &Path, p: &Precomputed) -> Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend((p.train.len() as u64).to_le_bytes());
    bytes.extend((p.eval.len() as u64).to_le_bytes());
    for (c, r) in p.train.iter().chain(&p.eval) {
        bytes.extend(c.to_le_bytes());
        bytes.extend(r.to_le_bytes());
    }
    crate::base::outputs::write(path, &bytes)
}

/// Computes the reference of every pair of `split` with `logps` (the reference's log-probability
/// of each sequence of a batch of pairs), `batch` pairs at a time.
pub fn compute(
    split: &crate::data::Split,
    batch: usize,
    logps: &dyn Fn(&[&Example]) -> Result<Vec<f32>>,
) -> Result<Vec<(f32, f32)>> {
    let n = split.len();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let chunk: Vec<Example> = (start..(start + batch).min(n))
            .map(|i| split.get(i))
            .collect::<Result<_>>()?;
        let items: Vec<&Example> = chunk.iter().collect();
        let v = logps(&items)?;
        let b = items.len();
        if v.len() != 2 * b {
            return Err(Error::Config(
                "the reference gave the wrong number of log-probabilities".into(),
            ));
        }
        out.extend((0..b).map(|i| (v[i], v[b + i])));
    }
    Ok(out)
}
